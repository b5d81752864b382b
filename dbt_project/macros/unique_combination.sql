{#-
    Generic test: the combination of `columns` is unique in the model.
    Usage (model level):
        tests:
          - unique_combination:
              columns: [user_id, item_id]
    Fails with one row per duplicated combination. Where the table has a primary key or a
    unique index on exactly these columns, all NOT NULL, MariaDB already refuses duplicates
    and the test reads no rows (macros/tests_backed_by_keys.sql).
-#}
{% test unique_combination(model, columns) %}
    {%- if unique_key_enforces(model, columns) %}
-- {{ model }} has a unique key on ({{ columns | join(', ') }}), NOT NULL: MariaDB refuses duplicates
select
    {% for column in columns %}{{ column }},
    {% endfor %}count(*) as n_rows
from {{ model }}
where false
group by {{ columns | join(', ') }}
    {%- else %}

select
    {% for column in columns %}{{ column }},
    {% endfor %}count(*) as n_rows
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1
    {%- endif %}

{% endtest %}

{#-
    Generic test: the combination of `columns` is unique in the model.
    Usage (model level):
        tests:
          - unique_combination:
              columns: [user_id, item_id]
    Fails with one row per duplicated combination.
-#}
{% test unique_combination(model, columns) %}

select
    {% for column in columns %}{{ column }},
    {% endfor %}count(*) as n_rows
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1

{% endtest %}

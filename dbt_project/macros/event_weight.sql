-- sqlfluff:exclude_rules:LT02
{#- sqlfluff misreads the indentation of a CASE built by a Jinja loop -#}
{#-
    event_weight(event_type): SQL for the weight the seed event_weights gives a positive
    event type -- a CASE over the seed's positive rows, read when the model runs -- and
    NULL for a type that is not positive or not in the seed. Equal to the scalar
    subquery `(select weight from event_weights where event_type = <type> and
    is_positive = 1)`, compared under the event type column's collation the same way.

    Why a CASE and not the seed itself: joined, MariaDB reads the nine-row seed first and
    the events in no particular order, so the GROUP BYs of int_interactions and
    int_interaction_days could no longer stream their clustered input; as a correlated
    subquery, cached per event type, it still cost 30 s per 10M events (a GROUP BY of
    the staged events per (user, item): 12.7 s with the CASE, 43.4 s with the subquery,
    18.3 s joined through a primary key on the seed; bench/README.md). The seed stays the
    one place the weights are set: the models ref() it, so dbt builds it first and a
    change to it is read by the next build.
-#}
{% macro event_weight(event_type) -%}
    {%- set weights_relation = ref('event_weights') -%}
    {%- if execute -%}
        {%- set weights = run_query(
            'select event_type, weight from ' ~ weights_relation
            ~ ' where is_positive = 1 and event_type is not null order by event_type'
        ) -%}
    {%- endif -%}
    {%- if execute and weights.rows | length > 0 -%}
        case {{ event_type }}
            {%- for row in weights.rows %}
            when {{ sql_string_literal(row[0]) }} then
                {%- if row[1] is none %} cast(null as double){% else %} cast({{ sql_string_literal(row[1]) }} as double){% endif %}
            {%- endfor %}
        end
    {%- else -%}
        cast(null as double)
    {%- endif -%}
{%- endmacro %}

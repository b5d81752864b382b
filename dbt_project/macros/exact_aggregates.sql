{#-
    exact_sum(expression), exact_avg(expression): SUM and AVG of a DOUBLE expression
    added up exactly (each value as DECIMAL(38, 12), so to 12 decimal places), the
    result a DOUBLE as before.

    Why: a sum of floating-point numbers depends on the order they are added in. A full
    build aggregates a user's or a pair's events in the clustered order of
    stg_raw__events; an incremental build (macros/touched_keys.sql) reads the same events
    through another plan, in another order, and left 6,281 of 17,799 recomputed users'
    avg_unit_price different from a full rebuild in the last bits at 10M events. Exact
    sums are the same in any order, so incremental and full builds give the same table,
    and the value is the correctly rounded sum of the events' values.
-#}
{% macro exact_sum(expression) -%}
    cast(sum(cast({{ expression }} as decimal(38, 12))) as double)
{%- endmacro %}


{% macro exact_avg(expression) -%}
    cast(avg(cast({{ expression }} as decimal(38, 12))) as double)
{%- endmacro %}

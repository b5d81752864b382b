{#-
    incremental_watermark(column, relation=this): SQL for the largest `column` already in
    `relation` (an incremental model's own table), or a date before any data when
    the table is empty. Incremental models select source rows stamped after it.
-#}
{% macro incremental_watermark(column, relation=none) -%}
    (select coalesce(max({{ column }}), cast('1000-01-01' as datetime)) from {{ relation or this }})
{%- endmacro %}

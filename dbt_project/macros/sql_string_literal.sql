{#-
    sql_string_literal(value): a MySQL/MariaDB single-quoted string literal for a
    Jinja value (used to inline dbt vars such as product_id_pattern). Backslashes
    and quotes are escaped so REGEXP patterns like '\\d' survive as written.
-#}
{% macro sql_string_literal(value) -%}
    '{{ (value | string).replace("\\", "\\\\").replace("'", "''") }}'
{%- endmacro %}

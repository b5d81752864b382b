{#-
    Uniqueness tests that a table's own key already enforces read no rows.

    dbt's `unique` and the project's `unique_combination` group every row of the table
    they test. Most tables here are created with a PRIMARY KEY on exactly those columns
    (cluster_by, macros/create_table_as.sql) or get a unique index (create_index(...,
    unique=true)): MariaDB refuses a duplicate there, in every build, full or
    incremental, so the GROUP BY can find nothing. At 10M events those passes over 6.6-10M
    rows cost 11 s of node time in each next-day build (bench/README.md). So a test whose
    columns are exactly the columns of a unique key of the tested table (information_schema
    says, when the test runs) selects from it `where false`, and the compiled SQL says why;
    a view, a table without such a key (one that lost its cluster_by, say) or a narrowed
    or filtered relation is grouped as before. unique_combination counts NULLs as values,
    so it relies only on keys whose columns are NOT NULL (a primary key's always are);
    dbt's unique skips NULLs, as a unique index does.
-#}
{% macro default__test_unique(model, column_name) %}
    {%- if unique_key_enforces(model, [column_name], nulls_allowed=true) %}
-- {{ model }} has a unique key on ({{ column_name }}): MariaDB refuses duplicates
select {{ column_name }} as unique_field, count(*) as n_records
from {{ model }}
where false
group by {{ column_name }}
    {%- else %}
        {{ dbt.default__test_unique(model, column_name) }}
    {%- endif %}
{% endmacro %}


{#- whether `relation` (a table) has a unique index or primary key on exactly `columns` -#}
{% macro unique_key_enforces(relation, columns, nulls_allowed=false) -%}
    {%- if not execute or relation is string or relation.identifier is none -%}
        {{ return(false) }}
    {%- endif -%}
    {%- set wanted = columns | map('lower') | sort | list -%}
    {%- for column in wanted if not modules.re.match('^[a-z_][a-z0-9_]*$', column) -%}
        {{ return(false) }}
    {%- endfor -%}
    {%- set keys = run_query(
        "select group_concat(lower(column_name) order by column_name separator ','),"
        ~ " sum(nullable = 'YES')"
        ~ " from information_schema.statistics"
        ~ " where table_schema = " ~ sql_string_literal(relation.schema)
        ~ " and table_name = " ~ sql_string_literal(relation.identifier)
        ~ " and non_unique = 0"
        ~ " group by index_name"
    ) -%}
    {%- for key in keys.rows -%}
        {%- if key[0] == wanted | join(',') and (nulls_allowed or key[1] | int == 0) -%}
            {{ return(true) }}
        {%- endif -%}
    {%- endfor -%}
    {{ return(false) }}
{%- endmacro %}

{#-
    mariadb__create_table_as / mysql__create_table_as: override dbt-mysql 1.7's macros of
    the same names (the profile's type is mariadb; mysql for MySQL servers) to honour a
    `cluster_by` config (a list of columns): the table is created with that PRIMARY KEY
    and filled in its order.

    Why: CREATE TABLE ... AS SELECT gives InnoDB a hidden row id as the clustered index,
    so every GROUP BY or window over (user_id, item_id) downstream builds a temporary
    table; with VARCHAR ids those rows are fixed-width in memory (256 bytes per
    utf8mb4 id) and spill to disk between 1M and 10M events, which made the marts grow
    50-71 times for 10 times the data. Clustered on its grouping columns, a table is
    read in group order and MariaDB aggregates it as a stream, in the same time at
    any size. The rows reach InnoDB in key order (appends, not page splits in a B-tree
    larger than the buffer pool): sorted by the server's ORDER BY, or on MariaDB by
    InnoDB's bulk load (below). The key's columns become NOT NULL.
    Without `cluster_by` (or with a contract) this is the adapter's macro.

    On MariaDB the CREATE has no ORDER BY and runs with unique_checks and
    foreign_key_checks off for that statement alone (SET STATEMENT ... FOR): InnoDB
    (10.6+) then bulk-loads the empty table, sorting the rows by the key itself and
    building the B-tree bottom up, without row-by-row redo and undo. A duplicate key
    is still refused (ER_DUP_ENTRY, no table left). At 10M events, the same tables
    (CHECKSUM TABLE; bench/README.md): stg_raw__events' wide rows 223.3 -> 66.5 s
    (the server's filesort of the full rows went past memory), int_interactions
    29.0 -> 26.7 s, int_interaction_days 24.9 -> 22.8 s, interactions_time_split
    21.4 -> 21.1 s. A MySQL server keeps the ORDER BY.
-#}
{% macro mariadb__create_table_as(temporary, relation, sql) -%}
    {%- if config.get('cluster_by', none) and not config.get('contract').enforced -%}
        {{ clustered_create_table_as(temporary, relation, sql, bulk_load=true) }}
    {%- else -%}
        {{ dbt.mariadb__create_table_as(temporary, relation, sql) }}
    {%- endif -%}
{%- endmacro %}


{% macro mysql__create_table_as(temporary, relation, sql) -%}
    {%- if config.get('cluster_by', none) and not config.get('contract').enforced -%}
        {{ clustered_create_table_as(temporary, relation, sql) }}
    {%- else -%}
        {{ dbt.mysql__create_table_as(temporary, relation, sql) }}
    {%- endif -%}
{%- endmacro %}


{% macro clustered_create_table_as(temporary, relation, sql, bulk_load=false) -%}
    {%- set cluster_by = config.get('cluster_by') -%}
    {%- set sql_header = config.get('sql_header', none) -%}
    {{ sql_header if sql_header is not none }}
    {% if bulk_load -%}
        set statement unique_checks = 0, foreign_key_checks = 0 for
    {% endif -%}
    create {% if temporary -%}temporary{%- endif %} table
        {{ relation.include(database=False) }}
        (primary key ({{ cluster_by | join(', ') }}))
    as
    select * from (
        {{ sql }}
    ) as clustered_rows
    {%- if not bulk_load %}
    order by {{ cluster_by | join(', ') }}
    {%- endif %}
{%- endmacro %}

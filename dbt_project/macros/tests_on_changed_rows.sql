{#-
    What a generic test reads in an incremental build: the rows the build changed.

    A next-day build at 10M events spent 79 s of its tests' node time reading every row
    of the 6.6-10M-row tables it had appended to (bench/README.md), rows the last
    recorded build already tested and no build has changed since. So dbt's dispatched
    get_where_subquery (the relation a generic test reads, with its `where` config) is
    overridden here (dispatch finds the project's default__ before dbt's, for any
    adapter): in an incremental build, the row-local tests of a model whose config
    has `meta={'tests_read_changed_users': true}` read only the rows of the shoppers with
    events staged since the last recorded build.

    Why that is every row that can be wrong:
      * a build is recorded only after `dbt build` passed every test on every row
        (recsys_pipeline.features.dbt.record_build);
      * the marked models change only the rows of shoppers with events staged since then,
        and stg_raw__events__since_last_build (macros/events_since_last_build.sql) holds
        those events until a build succeeds: rows a failed build wrote are tested again;
      * only row-local tests are narrowed: not_null, accepted_values and relationships (the
        child's rows; the parent is read whole), and the singular tests that check each
        shopper's rows on their own, through rows_of_changed_users() below. The uniqueness
        tests are not: narrowed, unique_combination's GROUP BY ran over a temporary table
        instead of streaming the clustered key, 1.3-1.7 s -> 10.8-15.7 s at 10M events (those
        a table's own key enforces read no rows at all: macros/tests_backed_by_keys.sql);
      * only when the model itself was updated incrementally in this invocation
        (record_incremental_run(), a project pre-hook, writes it to dbt_incremental_runs):
        a model built whole -- --full-refresh, its table missing -- is tested whole, and so
        is everything under a `dbt test` of its own.
-#}
{% macro default__get_where_subquery(relation) -%}
    {%- set conditions = [config.get('where', ''), changed_rows_condition(relation)] | select | list -%}
    {%- if conditions -%}
        {%- set filtered -%}
            (select * from {{ relation }} where {{ conditions | join(' and ') }}) dbt_subquery
        {%- endset -%}
        {%- do return(filtered) -%}
    {%- else -%}
        {%- do return(relation) -%}
    {%- endif -%}
{%- endmacro %}



{#- the SQL condition on `relation`'s rows that a test may keep to, or '' for every row -#}
{% macro changed_rows_condition(relation) -%}
    {%- set row_local = ['not_null', 'accepted_values', 'relationships'] -%}
    {%- set metadata = model.get('test_metadata') if execute and not flags.FULL_REFRESH else none -%}
    {%- if metadata is none or metadata.get('name') not in row_local -%}
        {{ return('') }}
    {%- endif -%}
    {%- set tested = graph.nodes.get(model.get('attached_node')) -%}
    {%- if tested is none or not tested.config.meta.get('tests_read_changed_users') -%}
        {{ return('') }}
    {%- endif -%}
    {%- if not updated_incrementally(relation, tested.alias) -%}
        {{ return('') }}
    {%- endif -%}
    {{ return(changed_users_condition(relation)) }}
{%- endmacro %}


{#- the shoppers with events staged since the last recorded build, as a condition on `relation`'s user_id -#}
{% macro changed_users_condition(relation) -%}
    {#- stg_raw__events' own list, beside it in the same schema (a ref here would be a test dependency) -#}
    {%- set staged = api.Relation.create(
        database=relation.database, schema=relation.schema, identifier='stg_raw__events'
    ) -%}
    {{ return('user_id in (select user_id from ' ~ events_since_last_build_relation(staged) ~ ')') }}
{%- endmacro %}


{#- whether record_incremental_run() saw model `name` updated in place by this invocation -#}
{% macro updated_incrementally(relation, name) -%}
    {%- set runs = adapter.get_relation(
        database=relation.database, schema=relation.schema, identifier='dbt_incremental_runs'
    ) -%}
    {%- if runs is none -%}
        {{ return(false) }}
    {%- endif -%}
    {%- set found = run_query(
        'select count(*) from ' ~ runs ~ ' where model = ' ~ sql_string_literal(name)
        ~ ' and invocation_id = ' ~ sql_string_literal(invocation_id)
    ) -%}
    {{ return(found.columns[0].values()[0] > 0) }}
{%- endmacro %}


{#-
    record_incremental_run(): pre-hook SQL (every model, dbt_project.yml; SQL only for the
    models whose tests may read their changed rows): notes the invocation that updates the
    model in place, or forgets it when the model is built whole. A pre-hook, because
    is_incremental() is decided before the model's query runs: in a post-hook the table a
    build without --full-refresh has just created already exists. The table is made by
    create_incremental_runs() (on-run-start).
-#}
{% macro record_incremental_run() -%}
    {#- at parse time (execute false) config.get gives '' for every key -#}
    {%- if execute and (config.get('meta') or {}).get('tests_read_changed_users') -%}
        {%- if is_incremental() -%}
            replace into {{ this.schema }}.dbt_incremental_runs (model, invocation_id)
            values ({{ sql_string_literal(this.identifier) }}, {{ sql_string_literal(invocation_id) }})
        {%- else -%}
            delete from {{ this.schema }}.dbt_incremental_runs where model = {{ sql_string_literal(this.identifier) }}
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}


{% macro create_incremental_runs() -%}
    create table if not exists {{ target.schema }}.dbt_incremental_runs (
        model varchar(128) not null primary key,
        invocation_id char(36) not null
    )
{%- endmacro %}


{#-
    rows_of_changed_users(model_name, read_whole_with=[]): what a singular test that
    checks each shopper's rows on their own reads -- `model_name`'s table, or in an
    incremental build only the rows of the shoppers with events staged since the last
    recorded build, as the narrowed generic tests above (the same reasons). To be
    aliased at the call: `from {{ rows_of_changed_users('interactions_split') }} as split`.
    Narrowed only when `model_name` and every model the test reads beside it
    (`read_whole_with`: looked up for the narrowed shoppers' rows, so they must not have
    been rebuilt whole either) were updated in place by this invocation. At 10M events the
    split's three per-shopper tests read 1.1M of 6.6M rows after a day of 1% new events.
-#}
{% macro rows_of_changed_users(model_name, read_whole_with=[]) -%}
    {%- set relation = ref(model_name) -%}
    {%- set checked = execute and not flags.FULL_REFRESH -%}
    {%- set built_whole = [] -%}
    {%- for name in [model_name] + read_whole_with -%}
        {#- ref() on every path: at parse time (execute false) it records the test's dependencies -#}
        {%- set read = ref(name) -%}
        {%- if checked and not updated_incrementally(relation, read.identifier) -%}
            {%- do built_whole.append(name) -%}
        {%- endif -%}
    {%- endfor -%}
    {%- if checked and not built_whole -%}
        (select * from {{ relation }} where {{ changed_users_condition(relation) }})
    {%- else -%}
        {{ relation }}
    {%- endif -%}
{%- endmacro %}

{#-
    touched_pairs_relation(), create_touched_pairs(), drop_touched_pairs(): an
    incremental model's session table of the (user_id, item_id) pairs with events staged
    since the last recorded build (last_build_watermark()), filled by a pre-hook before
    the model's query runs and dropped after it. Outside an incremental build the hooks
    only drop it. For the models that recompute each touched pair from all its events
    (int_interactions, int_interaction_days, int_item_buyers): pairs a failed build
    already updated are recomputed again, to the same rows. The model's own watermark
    (the newest last_loaded_at it holds) was a max over its 6.6M rows, 2-3 s a model at
    10M events.

    Why a table and not a CTE: as a derived table MariaDB cannot tell its size (it
    estimates every staged event) and reads all of stg_raw__events in its clustered
    order, probing the pairs for each event; a real table has row counts, so the
    optimizer starts from the pairs (sorted, the table's primary key) and reads each
    pair's events by stg_raw__events' (user_id, item_id) key. At 10M events with 100k
    new ones int_interactions' query 20-100 s -> 3.5 s (this table) + 8.6 s, the same rows.
-#}
{% macro touched_pairs_relation() -%}
    {{ this.schema }}.{{ this.identifier }}__touched_pairs
{%- endmacro %}


{% macro create_touched_pairs() -%}
    {{ create_touched_keys(touched_pairs_relation(), ['user_id', 'item_id'], 'stg_raw__events', 'loaded_at',
        last_build_watermark()) }}
{%- endmacro %}


{% macro drop_touched_pairs() -%}
    drop temporary table if exists {{ touched_pairs_relation() }}
{%- endmacro %}


{#-
    touched_users_relation(), create_touched_users(model, loaded_at_column),
    drop_touched_users(): the same for a model keyed per shopper: the users with rows of
    `model` (its input) stamped after the last recorded build (`loaded_at_column` after
    last_build_watermark()). Every caller passes the staged events (their list since the
    last build): the shoppers of int_user_activity's new events, and for the models
    built from int_interactions (interactions_split, int_user_interaction_spans) a
    superset of the shoppers whose interactions changed -- the few whose new events
    changed none (returns, non-products) are redone to the same rows. int_interactions'
    own rows stamped after the build were a scan of its 6.6M rows (2 s a model at 10M).
-#}
{% macro touched_users_relation() -%}
    {{ this.schema }}.{{ this.identifier }}__touched_users
{%- endmacro %}


{% macro create_touched_users(model, loaded_at_column) -%}
    {{ create_touched_keys(touched_users_relation(), ['user_id'], model, loaded_at_column, last_build_watermark()) }}
{%- endmacro %}


{#- the session table of the distinct `keys` of `model`'s rows with `loaded_at_column` after `since` -#}
{% macro create_touched_keys(relation, keys, model, loaded_at_column, since) -%}
    {%- if is_incremental() -%}
        {#- the staged events' keys come from their list since the last build (macros/events_since_last_build.sql) -#}
        {%- set changed_rows = events_since(since) if model == 'stg_raw__events' else
            'select * from ' ~ ref(model) ~ ' where ' ~ loaded_at_column ~ ' > ' ~ since -%}
        create temporary table {{ relation }} (primary key ({{ keys | join(', ') }}))
        select distinct {{ keys | join(', ') }}
        from ({{ changed_rows }}) as changed_rows
    {%- else -%}
        drop temporary table if exists {{ relation }}
    {%- endif -%}
{%- endmacro %}


{#-
    rows_of_touched_users(model): SQL selecting `model`'s rows, only the touched users'
    (the session table above, joined on user_id) in an incremental build: how a model
    keyed per shopper reads its per-shopper inputs.
-#}
{% macro rows_of_touched_users(model) -%}
    select {{ model }}.*
    from {{ ref(model) }} as {{ model }}
    {% if is_incremental() -%}
        inner join {{ touched_users_relation() }} as touched_users
            on touched_users.user_id = {{ model }}.user_id
    {%- endif %}
{%- endmacro %}


{% macro drop_touched_users() -%}
    drop temporary table if exists {{ touched_users_relation() }}
{%- endmacro %}


{#-
    last_build_watermark(): the newest raw `loaded_at` the last successful build saw
    (recsys_pipeline.features.dbt.record_build writes it to dbt_build_state, in the
    profile's database, after every build, and plan_build allows an incremental build
    only when the raw events have only grown since). A model without a loaded_at column of its own selects what changed
    after it. Without a recorded build, every row counts as changed.
-#}
{% macro last_build_watermark() -%}
    {#- parsing (execute is false: dbt's parse phase, sqlfluff) has no database to look in -#}
    {%- set state = adapter.get_relation(database=this.database, schema=target.schema, identifier='dbt_build_state')
        if execute else none -%}
    {%- if state is none -%}
        cast('1000-01-01' as datetime)
    {%- else -%}
        (
            select coalesce(max(raw_max_loaded_at), cast('1000-01-01' as datetime))
            from {{ state }}
            where project = {{ sql_string_literal(project_name) }}
        )
    {%- endif -%}
{%- endmacro %}


{#- build_recorded(): whether a successful build is recorded (last_build_watermark() is then its watermark) -#}
{% macro build_recorded() -%}
    {%- set state = adapter.get_relation(database=this.database, schema=target.schema, identifier='dbt_build_state')
        if execute else none -%}
    {%- if state is none -%}
        {{ return(false) }}
    {%- endif -%}
    {%- set recorded = run_query(
        "select count(*) from " ~ state ~ " where project = " ~ sql_string_literal(project_name)
    ) -%}
    {{ return(recorded.columns[0].values()[0] > 0) }}
{%- endmacro %}

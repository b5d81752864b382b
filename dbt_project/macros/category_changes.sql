{#-
    For user_top_categories' incremental build: which shoppers' category rows can
    change, besides those with new interactions.

    A user's rows depend on their own interactions and on the categories of their items
    (int_item_categories, rebuilt in full from the catalogue on every build), and every
    user's rows show each category under one spelling, the lowest in binary order of
    those the column's collation equates. So a build after new events must also redo
    the users of every item whose category changed, appeared or went, and every user
    when a category's shown spelling changed. The categories the table was last built
    with are kept beside it (categories_seen_relation(), item_id and category, one row
    per catalogue item: the table record_categories_seen() writes after every build),
    and compared with the new ones here.

    category_touched_users_sql(): a SELECT of the user_ids of the shoppers with events
    staged since the last recorded build (stg_raw__events' list of them) and of the users
    those category changes reach (every user when a spelling changed, or when the record
    of the last build's categories is missing). The comparisons read the catalogue's few
    rows; the changed items' users, when there are any, come from a scan of
    int_interactions (it has no index on item_id).
-#}
{% macro categories_seen_relation() -%}
    {{ this.schema }}.{{ this.identifier }}__categories_seen
{%- endmacro %}


{#- two post-hooks: between them no record is left, and the next build redoes every user -#}
{% macro drop_categories_seen() -%}
    drop table if exists {{ categories_seen_relation() }}
{%- endmacro %}


{% macro record_categories_seen() -%}
    create table {{ categories_seen_relation() }} (primary key (item_id))
    select item_id, category from {{ ref('int_item_categories') }}
{%- endmacro %}


{% macro create_category_touched_users() -%}
    {%- if is_incremental() -%}
        create temporary table {{ touched_users_relation() }} (primary key (user_id))
        select distinct user_id from ({{ category_touched_users_sql() }}) as touched
    {%- else -%}
        drop temporary table if exists {{ touched_users_relation() }}
    {%- endif -%}
{%- endmacro %}


{% macro category_touched_users_sql() -%}
    {%- set seen = adapter.get_relation(
        database=this.database, schema=this.schema, identifier=this.identifier ~ '__categories_seen'
    ) -%}
    {%- set categories = ref('int_item_categories') -%}
    {%- set everyone = seen is none -%}
    {%- set n_changed_items = 0 -%}
    {%- if not everyone and execute -%}
        {%- set spelling_changed -%}
            select count(*) from (
                select group_key, min(cast(category as binary)) as shown
                from (select category, category as group_key from {{ seen }} union all select 'other', 'other') as t
                group by group_key
            ) as before_build
            inner join (
                select group_key, min(cast(category as binary)) as shown
                from (select category, category as group_key from {{ categories }} union all select 'other', 'other') as t
                group by group_key
            ) as after_build
                on after_build.group_key = before_build.group_key
            where after_build.shown <> before_build.shown
        {%- endset -%}
        {%- set everyone = run_query(spelling_changed).columns[0].values()[0] > 0 -%}
        {%- set changed_items_sql -%}
            select categories.item_id
            from {{ categories }} as categories
            left join {{ seen }} as seen
                on seen.item_id = categories.item_id
            where seen.item_id is null or cast(seen.category as binary) <> cast(categories.category as binary)
            union
            select seen.item_id
            from {{ seen }} as seen
            left join {{ categories }} as categories
                on categories.item_id = seen.item_id
            where categories.item_id is null
        {%- endset -%}
        {%- set n_changed_items = run_query("select count(*) from (" ~ changed_items_sql ~ ") as changed").columns[0].values()[0] -%}
    {%- endif -%}
    {%- if everyone %}
    select user_id from {{ ref('int_interactions') }}
    {%- else %}
    {#- the shoppers with events staged since the last recorded build: every shopper whose interactions
        changed, and a few whose new events changed none (returns, non-products), redone to the same rows;
        int_interactions' rows stamped after it were a scan of its 6.6M rows at 10M events (2 s) -#}
    select user_id from ({{ events_since(last_build_watermark()) }}) as staged_since_last_build
        {%- if n_changed_items > 0 %}
    union all
    select user_id from {{ ref('int_interactions') }} where item_id in ({{ changed_items_sql }})
        {%- endif %}
    {%- endif %}
{%- endmacro %}

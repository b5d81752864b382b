{#-
    For user_features' incremental build: the shoppers whose profile can change in a
    build after new events, redone by the model; the others keep their row, with
    recency_days moved to the new "now" (update_recency_days()).

    A profile depends on the user's own events and interactions, their categories
    (user_top_categories, itself per user but reaching every user of an item whose
    category changed: macros/category_changes.sql, here with user_features' own record
    of the categories it was built with), the price band of their items (item_features'
    ntile over every priced item: a new price moves other items' bands), and their row
    of stg_raw__users. So the touched users are those with staged events loaded since
    the last build, those category changes reach, the users of items whose band
    changed since this table was built (price_bands_seen_relation(), kept beside it),
    and those whose country or attributes differ from the stored ones.
-#}
{% macro price_bands_seen_relation() -%}
    {{ this.schema }}.{{ this.identifier }}__price_bands_seen
{%- endmacro %}


{% macro drop_price_bands_seen() -%}
    drop table if exists {{ price_bands_seen_relation() }}
{%- endmacro %}


{% macro record_price_bands_seen() -%}
    create table {{ price_bands_seen_relation() }} (primary key (item_id))
    select item_id, price_band from {{ ref('item_features') }}
{%- endmacro %}


{% macro create_profile_touched_users() -%}
    {%- if is_incremental() -%}
        {%- set bands_seen = adapter.get_relation(
            database=this.database, schema=this.schema, identifier=this.identifier ~ '__price_bands_seen'
        ) -%}
        {%- set items = ref('item_features') -%}
        {%- set changed_bands_sql -%}
            select items.item_id
            from {{ items }} as items
            left join {{ bands_seen }} as seen
                on seen.item_id = items.item_id
            where not (seen.price_band <=> items.price_band)
            union
            select seen.item_id
            from {{ bands_seen }} as seen
            left join {{ items }} as items
                on items.item_id = seen.item_id
            where items.item_id is null
        {%- endset -%}
        {%- set n_changed_bands = 1 if bands_seen is none or not execute else
            run_query("select count(*) from (" ~ changed_bands_sql ~ ") as changed").columns[0].values()[0] -%}
        create temporary table {{ touched_users_relation() }} (primary key (user_id))
        select user_id from ({{ events_since(last_build_watermark()) }}) as new_events
        union
        select user_id from ({{ category_touched_users_sql() }}) as category_touched
        {%- if bands_seen is none %}
        union
        select user_id from {{ ref('int_interactions') }}
        {%- elif n_changed_bands > 0 %}
        union
        select user_id from {{ ref('int_interactions') }}
        where item_id in ({{ changed_bands_sql }})
        {%- endif %}
        union
        select profiles.user_id
        from {{ this }} as profiles
        left join {{ ref('stg_raw__users') }} as users
            on users.user_id = profiles.user_id
        -- as bytes: the columns' collation takes 'uk' and 'UK' (or 'Gold' and 'gold') for equal
        where not (
            cast(profiles.country as binary) <=> cast(users.country as binary)
            and cast(profiles.attributes as binary) <=> cast(users.attributes as binary)
        )
    {%- else -%}
        drop temporary table if exists {{ touched_users_relation() }}
    {%- endif -%}
{%- endmacro %}


{#- post-hook: every untouched profile's recency_days, from the new newest event -#}
{% macro update_recency_days() -%}
    {%- if is_incremental() -%}
        update {{ this }} as profiles
        cross join (
            select max(last_seen_at) as max_event_at from {{ ref('int_item_event_totals') }}
        ) as data_end
        set profiles.recency_days = datediff(data_end.max_event_at, profiles.last_event_at)
        where not (profiles.recency_days <=> datediff(data_end.max_event_at, profiles.last_event_at))
    {%- else -%}
        do 0
    {%- endif -%}
{%- endmacro %}

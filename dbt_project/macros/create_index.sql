{#-
    create_index(columns, name=none, unique=false): post-hook SQL that adds a secondary index
    to the model being built (tables only). MariaDB supports IF NOT EXISTS, so
    the hook is idempotent.
    Usage: {{ config(post_hook=[create_index(['user_id', 'item_id'])]) }}
    The returned string is rendered in the model's context, so {{ this }} is
    resolved when the hook runs.
-#}
{% macro create_index(columns, name=none, unique=false) -%}
    {%- set index_name = name or (('ux_' if unique else 'ix_') ~ (columns | join('_'))) -%}
    create {{ 'unique ' if unique }}index if not exists {{ index_name }} on {{ '{{ this }}' }} ({{ columns | join(', ') }})
{%- endmacro %}

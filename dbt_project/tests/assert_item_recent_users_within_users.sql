-- sqlfluff:exclude_rules:LT02
{#- sqlfluff misreads the indentation of conditions built by a Jinja loop -#}
-- an item's recent users are some of its users: each popularity window counts at most
-- n_users, and a longer window at least as many as a shorter one (var popularity_windows_days)
{%- set windows = var('popularity_windows_days') | map('int') | sort %}

select
    item_id,
    n_users
    {%- for days in windows %},
    n_users_{{ days }}d
    {%- endfor %}
from {{ ref('item_features') }}
where false
{%- for days in windows %}
    or n_users_{{ days }}d > n_users
    {%- if not loop.first %}
    or n_users_{{ days }}d < n_users_{{ loop.previtem }}d
    {%- endif %}
{%- endfor %}

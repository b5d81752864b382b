{#-
    holdout_keep_count(n, min_items, keep_fraction): how many of a user's n time-ordered
    items stay on the training side of a temporal holdout. Users with at least
    max(min_items, 2) items keep floor(n * keep_fraction) -- but always at least one
    item on each side; smaller users keep all n. Used for train/test and, inside
    train, for fit/validation, so both splits follow one rule.
-#}
{% macro holdout_keep_count(n, min_items, keep_fraction) -%}
    case
        when {{ n }} >= greatest({{ min_items }}, 2)
            then least({{ n }} - 1, greatest(1, floor({{ n }} * {{ keep_fraction }})))
        else {{ n }}
    end
{%- endmacro %}

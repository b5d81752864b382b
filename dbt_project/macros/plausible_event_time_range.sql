{#-
    plausible_event_time_range(): `low and high` bounds for a parsed event time, for
    `event_at between {{ plausible_event_time_range() }}`. Times before the var
    `min_event_time` (default 1970-01-01) or later than the
    row's load time plus `max_event_time_skew_hours` (default 24: clocks of other
    time zones) are impossible; such rows are rejected as 'implausible_event_time'.
    The bounds depend only on the row and vars, so reruns give the same result.
-#}
{% macro plausible_event_time_range(loaded_at_column='loaded_at') -%}
    cast({{ sql_string_literal(var('min_event_time')) }} as datetime)
        and {{ loaded_at_column }} + interval {{ var('max_event_time_skew_hours') | int }} hour
{%- endmacro %}

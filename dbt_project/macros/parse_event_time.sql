{#-
    parse_event_time(col): turn the raw event_time text into a DATETIME.

    Accepted formats (after trimming):
      '%Y-%m-%d %H:%i:%s'  e.g. 2011-12-09 12:50:00 (typed sources)
      '%Y-%m-%d'           e.g. 2011-12-09
      '%d-%m-%Y'           e.g. 21-07-2015 (groceries)
      '%d/%m/%Y'           e.g. 5/1/2015   (groceries, day first)
    Anything else, and impossible calendar values (31-02-2015, 25:00:00), gives NULL.

    str_to_date() is deliberately not used: on a bad value it raises a warning
    that MariaDB's strict mode turns into an error inside CREATE TABLE ... SELECT.
    Instead the text is matched with an anchored REGEXP, split into integer
    parts and rebuilt with makedate() + intervals, after checking every part
    is in range, so no expression can warn.
-#}
{% macro parse_event_time(col) -%}
    {%- set t = "trim(" ~ col ~ ")" -%}
    {%- set ymd_part = "substring_index(" ~ t ~ ", ' ', 1)" -%}
    {%- set hms_part = "substring_index(" ~ t ~ ", ' ', -1)" -%}
    case
        when {{ t }} regexp '^[0-9]{4}-[0-9]{1,2}-[0-9]{1,2} [0-9]{1,2}:[0-9]{1,2}:[0-9]{1,2}$'
            then {{ recsys_checked_datetime(
                "substring_index(" ~ ymd_part ~ ", '-', 1)",
                "substring_index(substring_index(" ~ ymd_part ~ ", '-', 2), '-', -1)",
                "substring_index(" ~ ymd_part ~ ", '-', -1)",
                "substring_index(" ~ hms_part ~ ", ':', 1)",
                "substring_index(substring_index(" ~ hms_part ~ ", ':', 2), ':', -1)",
                "substring_index(" ~ hms_part ~ ", ':', -1)"
            ) }}
        when {{ t }} regexp '^[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}$'
            then {{ recsys_checked_datetime(
                "substring_index(" ~ t ~ ", '-', 1)",
                "substring_index(substring_index(" ~ t ~ ", '-', 2), '-', -1)",
                "substring_index(" ~ t ~ ", '-', -1)"
            ) }}
        when {{ t }} regexp '^[0-9]{1,2}-[0-9]{1,2}-[0-9]{4}$'
            then {{ recsys_checked_datetime(
                "substring_index(" ~ t ~ ", '-', -1)",
                "substring_index(substring_index(" ~ t ~ ", '-', 2), '-', -1)",
                "substring_index(" ~ t ~ ", '-', 1)"
            ) }}
        when {{ t }} regexp '^[0-9]{1,2}/[0-9]{1,2}/[0-9]{4}$'
            then {{ recsys_checked_datetime(
                "substring_index(" ~ t ~ ", '/', -1)",
                "substring_index(substring_index(" ~ t ~ ", '/', 2), '/', -1)",
                "substring_index(" ~ t ~ ", '/', 1)"
            ) }}
    end
{%- endmacro %}


{#-
    recsys_checked_datetime(y, m, d, hh, mi, ss): DATETIME from digit-only text
    parts, or NULL when the parts do not form a real calendar date / time.
    Callers guarantee each part is 1-4 ASCII digits, so the casts never warn.
-#}
{% macro recsys_checked_datetime(y, m, d, hh="'0'", mi="'0'", ss="'0'") -%}
    {%- set yi = "cast(" ~ y ~ " as unsigned)" -%}
    {%- set mo = "cast(" ~ m ~ " as unsigned)" -%}
    {%- set di = "cast(" ~ d ~ " as unsigned)" -%}
    {%- set hi = "cast(" ~ hh ~ " as unsigned)" -%}
    {%- set mii = "cast(" ~ mi ~ " as unsigned)" -%}
    {%- set si = "cast(" ~ ss ~ " as unsigned)" -%}
    case
        when {{ yi }} between 1000 and 9999
            and {{ mo }} between 1 and 12
            and {{ di }} >= 1
            and {{ di }} <= dayofmonth(last_day(makedate({{ yi }}, 1) + interval ({{ mo }} - 1) month))
            and {{ hi }} <= 23
            and {{ mii }} <= 59
            and {{ si }} <= 59
            then cast(
                makedate({{ yi }}, 1)
                + interval ({{ mo }} - 1) month
                + interval ({{ di }} - 1) day
                + interval {{ hi }} hour
                + interval {{ mii }} minute
                + interval {{ si }} second
            as datetime)
    end
{%- endmacro %}

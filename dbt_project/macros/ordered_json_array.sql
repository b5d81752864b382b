{#-
    ordered_json_array(expression, order_by, limit=none): an aggregate giving the group's
    values as a JSON array in `order_by` order (at most `limit` of them), as
    JSON_ARRAYAGG(expression ORDER BY ... LIMIT ...) does for non-NULL text, with the same
    text and type (GROUP_CONCAT leaves NULLs out, where JSON_ARRAYAGG writes null: the
    ids and categories it is used for are never NULL).

    Why not JSON_ARRAYAGG itself: MariaDB 10.11 loses every character outside Latin-1
    ('jardín' came out as 'jard?n') when a JSON_ARRAYAGG with ORDER BY runs in a GROUP
    BY over a temporary table -- the plan an incremental build gets when it joins the
    touched users' table, while the full build streams in the clustered order and keeps
    them. GROUP_CONCAT keeps them in both plans; each value is quoted with JSON_QUOTE,
    and JSON_COMPACT writes the array as JSON_ARRAYAGG does (a truncated list, past
    group_concat_max_len, 1 MB, would be invalid JSON and come out NULL rather than cut).
-#}
{% macro ordered_json_array(expression, order_by, limit=none) -%}
    {%- set limit_clause = (' limit ' ~ (limit | int)) if limit is not none else '' -%}
    convert(json_compact(concat(
        '[',
        group_concat(json_quote({{ expression }}) order by {{ order_by }} separator ','{{ limit_clause }}),
        ']'
    )) using utf8mb4)
{%- endmacro %}

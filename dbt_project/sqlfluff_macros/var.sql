{#-
    sqlfluff only (load_macros_from_path in ../../.sqlfluff; dbt never reads this folder,
    which is not in dbt_project.yml's macro-paths): var(name, default) as dbt resolves
    it, from the dbt_vars dict of [sqlfluff:templater:jinja:context]. sqlfluff's
    own dbt builtin returns the placeholder 'item' for every var, which would render
    `{% for days in var('popularity_windows_days') %}` over the letters of 'item'.
-#}
{% macro var(name, default=none) -%}
    {{- return(dbt_vars.get(name, default)) -}}
{%- endmacro %}

{#-
    is_product_item(item_col): boolean SQL expression, true when the item id is a
    product:
      * it matches none of the anchored REGEXP patterns of the
        `non_product_items` seed (postage, fees, adjustments, gift vouchers ...), and
      * it matches the `product_id_pattern` var when that var is not ''.
    Matching is case-sensitive (the id is cast to binary), so the seed's '^D$' does
    not make an item 'd' of another dataset a non-product.
    Apply it to distinct item ids (not to every event) to keep it cheap.
-#}
{% macro is_product_item(item_col) -%}
    {%- set pattern = var('product_id_pattern', '') -%}
    (
        not exists (
            select 1
            from {{ ref('non_product_items') }} as non_product
            where cast({{ item_col }} as binary) regexp non_product.item_id_pattern
        )
    {%- if pattern | string | length > 0 %}
        and cast({{ item_col }} as binary) regexp {{ sql_string_literal(pattern) }}
    {%- endif %}
    )
{%- endmacro %}


{#- non_product_kind(item_col): the `kind` of the first non_product_items pattern the id matches, else null. -#}
{% macro non_product_kind(item_col) -%}
    (
        select min(non_product.kind)
        from {{ ref('non_product_items') }} as non_product
        where cast({{ item_col }} as binary) regexp non_product.item_id_pattern
    )
{%- endmacro %}

{#-
    The rows of stg_raw__events that count as a purchase-like interaction with a product
    (on top of the event type being positive in the seed event_weights): products only,
    no returns, quantity and price above zero when they are set. int_interactions and
    int_interaction_days read the same events through it.
-#}
{% macro positive_product_event(alias) -%}
    {{ alias }}.is_product = 1
    and {{ alias }}.is_return = 0
    and ({{ alias }}.quantity is null or {{ alias }}.quantity > 0)
    and ({{ alias }}.price is null or {{ alias }}.price > 0)
{%- endmacro %}

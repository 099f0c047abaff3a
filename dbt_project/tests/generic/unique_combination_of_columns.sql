{% test unique_combination_of_columns(model, combination_of_columns) %}
{#- Fails with one row per duplicated key combination (no dbt_utils dependency). -#}
select {{ combination_of_columns | join(', ') }}, count(*) as n_rows
from {{ model }}
group by {{ combination_of_columns | join(', ') }}
having count(*) > 1
{% endtest %}

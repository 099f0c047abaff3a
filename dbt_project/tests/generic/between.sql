{% test between(model, column_name, min_value=none, max_value=none, min_exclusive=false) %}
{#- Fails with the rows whose value is outside [min_value, max_value] ((min, max] when min_exclusive). -#}
select {{ column_name }}
from {{ model }}
where {{ column_name }} is not null
  and (
    false
    {% if min_value is not none %} or {{ column_name }} {{ '<=' if min_exclusive else '<' }} {{ min_value }} {% endif %}
    {% if max_value is not none %} or {{ column_name }} > {{ max_value }} {% endif %}
  )
{% endtest %}

{#-
  Time helpers. Internally every timestamp is a naive UTC `timestamp` (raw timestamptz converted with
  `at time zone 'UTC'`), so day boundaries never depend on a session time zone; marts convert back to
  timestamptz with `to_utc`.
-#}

{# The exclusive end of the data interval, as a naive UTC timestamp. var('interval_end') is required. #}
{% macro interval_end() -%}
    cast('{{ _interval_end_text() }}' as timestamp)
{%- endmacro %}

{# The last partition day that may hold events before interval_end (partition pruning on `dt`). #}
{% macro interval_end_date() -%}
    cast('{{ _interval_end_text()[:10] }}' as date)
{%- endmacro %}

{% macro _interval_end_text() -%}
    {%- set raw = var('interval_end') | string -%}
    {%- set text = raw | replace('T', ' ') -%}
    {%- if text[-6:] == '+00:00' -%}{%- set text = text[:-6] -%}{%- endif -%}
    {%- if text[-1:] == 'Z' -%}{%- set text = text[:-1] -%}{%- endif -%}
    {%- if text | length > 19 and text[19] in ['+', '-'] -%}
        {{ exceptions.raise_compiler_error("var('interval_end') must be UTC (no offset other than +00:00): " ~ raw) }}
    {%- endif -%}
    {{- text -}}
{%- endmacro %}

{# timestamptz -> naive UTC timestamp #}
{% macro utc_naive(expr) -%}
    cast(({{ expr }}) at time zone 'UTC' as timestamp)
{%- endmacro %}

{# naive UTC timestamp -> timestamptz (what marts expose) #}
{% macro to_utc(expr) -%}
    (({{ expr }}) at time zone 'UTC')
{%- endmacro %}

{% macro attribution_window() -%}
    interval '{{ var("attribution_window_days") | int }} days'
{%- endmacro %}

{% macro hours_between(start_expr, end_expr) -%}
    (extract(epoch from (({{ end_expr }}) - ({{ start_expr }}))) / 3600.0)
{%- endmacro %}

{# Additive (Beta-prior) smoothing shared by every rate feature; see vars in dbt_project.yml. #}
{% macro smoothed_rate(successes, trials) -%}
    cast(
        (coalesce({{ successes }}, 0) + {{ var('rate_prior_successes') }})
        / (coalesce({{ trials }}, 0) + {{ var('rate_prior_trials') }} * 1.0)
    as double precision)
{%- endmacro %}

{# Number of space-separated tokens of a normalized query ('' -> 0); portable across DuckDB and Postgres. #}
{% macro token_count(expr) -%}
    case when {{ expr }} = '' then 0
         else length({{ expr }}) - length(replace({{ expr }}, ' ', '')) + 1 end
{%- endmacro %}

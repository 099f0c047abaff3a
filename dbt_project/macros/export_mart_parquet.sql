{#-
  Post-hook of every mart: on DuckDB, write the freshly built table to $LTRR_MARTS_DIR/<model>.parquet
  (what Feast and the trainers read). Overwrites in place, so reruns of an interval are idempotent.
  On other targets the table itself is the mart and nothing is exported.
-#}
{% macro export_mart_parquet() -%}
    {%- if target.type == 'duckdb' -%}
        copy (select * from {{ this }}) to '{{ env_var("LTRR_MARTS_DIR") }}/{{ this.identifier }}.parquet'
            (format parquet, compression zstd)
    {%- endif -%}
{%- endmacro %}

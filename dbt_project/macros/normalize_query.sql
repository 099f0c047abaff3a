{#-
  normalize_query(expr): the SQL twin of ml.text.normalize_query (a test runs both on tricky strings).
  lowercase -> every run of chars outside [a-z0-9 ] becomes one space -> split on spaces, drop empties ->
  naive plural stripping per token -> join with one space. Per token, exactly as ml/text.py `_singular`:
    len > 3 and ends with 'es' and the char before 'es' in (s, x, z)  -> drop 'es'   (boxes -> box)
    elif len > 3 and ends with 's' and not with 'ss'                 -> drop 's'    (shoes -> shoe)
  then the spelling variants of ml/text.py SPELLING_VARIANTS, per token, after plural stripping
  (colours -> colour -> color). Keep the two maps identical: tests/ml/test_dbt.py compares them.
-#}
{% macro normalize_query(expr) -%}
    {{ return(adapter.dispatch('normalize_query', 'ltrr')(expr)) }}
{%- endmacro %}

{% macro _singular_token(tok) -%}
    case
        when length({{ tok }}) > 3 and {{ tok }} like '%es'
             and substr({{ tok }}, length({{ tok }}) - 2, 1) in ('s', 'x', 'z')
            then substr({{ tok }}, 1, length({{ tok }}) - 2)
        when length({{ tok }}) > 3 and {{ tok }} like '%s' and {{ tok }} not like '%ss'
            then substr({{ tok }}, 1, length({{ tok }}) - 1)
        else {{ tok }}
    end
{%- endmacro %}

{% macro _variant_token(tok) -%}
    {#- ml/text.py SPELLING_VARIANTS; `tok` is expanded once (simple CASE). -#}
    case {{ tok }}
        when 'colour' then 'color'
        when 'gray' then 'grey'
        when 'tshirt' then 't shirt'
        when 'tee' then 't shirt'
        when 'hoody' then 'hoodie'
        when 'jewellery' then 'jewelry'
        else {{ tok }}
    end
{%- endmacro %}

{% macro _query_cleaned(expr) -%}
    trim(regexp_replace(regexp_replace(lower({{ expr }}), '[^a-z0-9 ]+', ' ', 'g'), ' +', ' ', 'g'))
{%- endmacro %}

{% macro default__normalize_query(expr) -%}
    (
        select coalesce(string_agg({{ _variant_token(_singular_token('tok')) }}, ' ' order by ord), '')
        from unnest(string_to_array({{ _query_cleaned(expr) }}, ' ')) with ordinality as _toks(tok, ord)
        where tok <> ''
    )
{%- endmacro %}

{% macro duckdb__normalize_query(expr) -%}
    array_to_string(
        list_transform(
            list_filter(string_split({{ _query_cleaned(expr) }}, ' '), lambda tok: tok <> ''),
            lambda tok: {{ _variant_token(_singular_token('tok')) }}
        ),
        ' '
    )
{%- endmacro %}

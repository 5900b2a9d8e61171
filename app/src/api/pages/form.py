"""The benchmark form, made from the OpenAPI document's own description of `POST /benchmark`:
the fields, their bounds and the defaults this instance applies are the API's, never copied.

A field the document gains later (a sweep, say) shows up in the last group by itself. The form
has `novalidate`: what a user sees for a wrong value is the API's own message.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

from src.schemas.benchmarks import WORKLOAD_FIELDS

# Fields shown together, in this order; any other field of the document goes in the last group.
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Run", ("label", "notes")),
    ("Models", ("model", "provider", "provider_sort")),
    (
        "Prompts: a file, a dataset, or synthetic",
        ("prompt_file", "dataset_file", *WORKLOAD_FIELDS),
    ),
    ("Load", ("runs", "concurrency", "rate", "arrival", "duration", "warmup", "seed", "stream")),
    ("Sweep", ("sweep", "sweep_values")),
    ("Generation", ("max_tokens", "temperature", "top_p")),
    ("Service levels (goodput)", ("ttft_slo", "latency_slo", "tpot_slo")),
)
OTHER_GROUP = "More"
# Repeated fields: typed as one list, separated by commas or spaces; the script repeats them.
LIST_HINT = "several: separate with commas"
_LONG_TEXT = frozenset({"notes"})


def benchmark_form_fields(openapi: Mapping[str, Any]) -> dict[str, Any]:
    """The multipart body's properties from an OpenAPI document, its `$ref` followed."""
    operation = openapi["paths"]["/benchmark"]["post"]
    schema = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
    if "$ref" in schema:
        schema = openapi["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return dict(schema["properties"])


def form_page_body(fields: Mapping[str, Any], models: list[str]) -> str:
    placed: set[str] = set()
    groups = []
    for title, names in GROUPS:
        present = [name for name in names if name in fields]
        placed.update(present)
        groups.append(_group(title, present, fields))
    rest = [name for name in fields if name not in placed]
    if rest:
        groups.append(_group(OTHER_GROUP, rest, fields))
    options = "".join(f'<option value="{escape(model)}">' for model in models)
    return (
        "<h1>New benchmark</h1>"
        "<p>Defaults are the service's own; leave a field empty to use them.</p>"
        '<form id="benchmark-form" action="/benchmark?background=true" method="post" '
        'enctype="multipart/form-data" novalidate>'
        '<div id="form-errors" class="status-failed" role="alert"></div>'
        + "".join(groups)
        + f'<datalist id="model-ids">{options}</datalist>'
        '<p><button type="submit" id="start">Start the benchmark</button></p></form>'
    )


def _group(title: str, names: list[str], fields: Mapping[str, Any]) -> str:
    if not names:
        return ""
    rows = "".join(_field(name, fields[name]) for name in names)
    return f"<fieldset><legend>{escape(title)}</legend>{rows}</fieldset>"


def _field(name: str, spec: Mapping[str, Any]) -> str:
    # The API's own name: what the docs, curl and the error messages call it.
    title = escape(name)
    description = str(spec.get("description", "")).rstrip()
    if description and not description.endswith((".", ")")):
        description += "."
    help_text = escape(description)
    default = spec.get("default")
    shown_default = "unset" if default is None else _text(default)
    hint = f" Default: {escape(shown_default)}." if "default" in spec else ""
    return (
        f'<div class="field" data-field="{escape(name)}"><label for="field-{escape(name)}">'
        f"{title}</label> {_control(name, spec)}"
        f'<small>{help_text}{hint}</small><span class="field-error" data-for="{escape(name)}">'
        "</span></div>"
    )


def _control(name: str, spec: Mapping[str, Any]) -> str:
    ident = f'id="field-{escape(name)}" name="{escape(name)}"'
    default = spec.get("default")
    kind = spec.get("type")
    if spec.get("format") == "binary":
        return f'<input type="file" {ident}>'
    if "enum" in spec or kind == "boolean":
        choices = [True, False] if kind == "boolean" else list(spec["enum"])
        unset = "" if default is not None else '<option value="">unset</option>'
        options = "".join(
            f'<option value="{escape(_text(choice))}"'
            f"{' selected' if choice == default else ''}>{escape(_text(choice))}</option>"
            for choice in choices
        )
        return f"<select {ident}>{unset}{options}</select>"
    if kind == "array":
        example = ", ".join(str(item) for item in spec.get("example", []))
        datalist = ' list="model-ids"' if name == "model" else ""
        return (
            f'<input type="text" {ident} data-list="true"{datalist} '
            f'placeholder="{escape(example or LIST_HINT)}" title="{LIST_HINT}">'
        )
    if name in _LONG_TEXT:
        return f'<textarea {ident} rows="3"></textarea>'
    value = "" if default is None else f' value="{escape(_text(default))}"'
    if kind in ("integer", "number"):
        bounds = "".join(
            f' {attribute}="{spec[key]}"'
            for key, attribute in (("minimum", "min"), ("maximum", "max"))
            if key in spec
        )
        step = "1" if kind == "integer" else "any"
        return f'<input type="number" step="{step}"{bounds} {ident}{value} placeholder="unset">'
    return f'<input type="text" {ident}{value} placeholder="unset">'


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)

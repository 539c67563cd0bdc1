"""Templates end in a value or one TemplateError within the deadline: no CPU or memory bombs."""

from __future__ import annotations

import pytest

from evac.templating import TemplateError, check_syntax, render

BOMBS = [
    ("{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}", "more than 1,000,000 loop"),
    ("{{ range(100000)|list|length }}", "range of 100,000 items; at most 10,000"),
    ("{{ 'a' * 10**8 }}", "repeating would be larger than 1,048,576"),
    ("{{ ['a'] * 10**8 }}", "repeating would be larger than 1,048,576"),
    ("{{ (2 ** 100000)|string|length }}", "an integer larger than 4096 bits"),
    ("{{ 'a'|center(10**8) }}", "center would be larger"),
    ("{{ 'a'.ljust(10**8) }}", "ljust would be larger"),
    ("{{ '%0100000000d' % 1 }}", "format: a width or precision of 100000000"),
    ("{{ '%0100000000d'|format(1) }}", "format: a width or precision of 100000000"),
    ("{{ '{:>100000000}'.format(1) }}", "format: a width or precision of 100000000"),
    ("{{ '{:>{}}'.format(1, 10**8) }}", "format: a width taken from an argument"),
    ("{% set s = 'a' * 100000 %}{{ s|replace('a', s)|length }}", "replace would be larger"),
    ("{{ range(10000)|join('x' * 1000) }}", "join would be larger"),
    (
        "{% set ns = namespace(x='ab') %}{% for i in range(40) %}{% set ns.x = ns.x ~ ns.x %}{% endfor %}",
        "~ (joining text) would be larger",
    ),
    ("{% for i in range(10000) %}{{ 'x' * 1000 }}{% endfor %}", "output larger than 1,048,576 characters"),
    (
        "{% set l = [1] * 20000 %}{% set a = [l, l, l, l, l, l, l, l, l, l] %}{% set b = [a, a, a, a, a, a, a, a, a, a] %}",
        "a value larger than 1,048,576",
    ),
    ("{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(40) }}", "took longer than 2 s"),
    ("{{ " + "(" * 500 + "1" + ")" * 500 + " }}", "nested or recursing too deeply"),
]


@pytest.mark.timeout(10)
@pytest.mark.parametrize(("template", "message"), BOMBS, ids=[message for _, message in BOMBS])
def test_a_template_bomb_stops_with_one_line(template: str, message: str) -> None:
    with pytest.raises(TemplateError) as info:
        render(template, {})
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert len(str(info.value)) < 300  # the template is cut in the message


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{% for h in params.hosts %}{{ loop.index }}:{{ h }} {% endfor %}", "1:a 2:b "),
        ("{% for k, v in {'x': 1}.items() %}{{ k }}={{ v }}{% endfor %}", "x=1"),
        ("{{ params.hosts | map('upper') | list }}", ["A", "B"]),
        ("{{ 'kvm' ~ 1 ~ '-' ~ params.hosts|join(',') }}", "kvm1-a,b"),
        ("{{ range(3)|list + [3] }}", [0, 1, 2, 3]),
        ("{{ 'ab' * 3 }}", "ababab"),
        ("{{ 2 ** 10 * 1024 }}", 1048576),
        ("{{ '%5s|%-3d' % ('x', 7) }}", "    x|7  "),
        ("{{ '{:>4}'.format(7) }}", "   7"),
        ("{% macro m(x) %}<{{ x }}>{% endmacro %}{{ m(1) }}{{ m(2) }}", "<1><2>"),
        ("{{ (range(10000)|list)|length }}", 10000),
    ],
)
def test_ordinary_templates_still_render(template: str, expected: object) -> None:
    assert render(template, {"params": {"hosts": ["a", "b"]}}) == expected


@pytest.mark.timeout(10)
def test_checking_a_constant_bomb_does_not_evaluate_it() -> None:
    assert check_syntax("{{ 'a'|center(1000000000) }}") is None
    assert check_syntax("{{ 9 ** 999999999 }}") is None
    assert check_syntax("{{ " + "(" * 500 + "1" + ")" * 500 + " }}") == "nested too deeply"

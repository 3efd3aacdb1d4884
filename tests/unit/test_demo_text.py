"""`tcpstack demo --lang`: the stories as data, in English and in the textbook chapter's terms.

The stories are templates over the facts the demo measures in a run, so they
are tested here without a run: every language fills the same facts, the
Chinese stories use the chapter's words for each scenario, and the Chinese
wrapping keeps to the terminal's columns without losing a character.
"""

# ruff: noqa: RUF001  (Chinese is written with fullwidth punctuation)
from __future__ import annotations

import unicodedata

import pytest

from tcpstack.lab import demo
from tcpstack.lab.demo_text import CHINESE, ENGLISH, TEXTS, fill_wide, template_fields

#: The chapter's terms each Chinese story must use (the chapter spells SYN-RCVD).
CHAPTER_TERMS = {
    "handshake": ["三报文握手", "连接请求报文段", "同步位 SYN = 1", "SYN-SENT（同步已发送）",
                  "SYN-RCVD（同步收到）", "ESTABLISHED（已建立连接）", "LISTEN（收听）",
                  "传输控制块 TCB", "消耗掉一个序号", "不消耗序号", "连接释放"],
    "four-segment": ["四报文握手", "确认报文段", "同步报文段", "效果是一样的",
                     "SYN-SENT（同步已发送）", "ESTABLISHED（已建立连接）"],
    "lost-third": ["第 3 个报文段", "定时器", "SYN+ACK", "RST 报文段强制关闭", "CLOSED（关闭）",
                   "客户端也关闭了连接", "SYN-RCVD（同步收到）"],
    "stale-syn": ["已失效的连接请求报文段", "滞留", "三报文握手", "白白浪费",
                  "SYN-RCVD（同步收到）", "LISTEN（收听）"],
    "close": ["连接释放", "FIN-WAIT-1（终止等待1）", "FIN-WAIT-2（终止等待2）",
              "CLOSE-WAIT（关闭等待）", "LAST-ACK（最后确认）", "TIME-WAIT（时间等待）", "2*MSL"],
}


def facts_for(scenario: str, same: bool = True) -> dict[str, object]:
    """A value for every fact the English story of `scenario` fills in (1.5 fits every
    format spec the stories use: :.6f, :.3f, :g, !r)."""
    names = template_fields(ENGLISH.stories[scenario]) - ENGLISH.pieces.keys()
    names |= template_fields(list(ENGLISH.pieces.values()))
    return {name: 1.5 for name in names} | {"same": same}


def test_every_language_tells_every_scenario() -> None:
    assert list(TEXTS) == ["en", "zh"]  # en first: the default
    for texts in TEXTS.values():
        assert texts.stories.keys() == demo.SCENARIOS.keys()


@pytest.mark.parametrize("scenario", list(demo.SCENARIOS))
def test_chinese_fills_the_same_facts_as_english(scenario: str) -> None:
    """So any run the English story can tell, the Chinese one can too."""
    assert template_fields(CHINESE.stories[scenario]) == template_fields(ENGLISH.stories[scenario])
    assert CHINESE.pieces.keys() == ENGLISH.pieces.keys()
    for piece in ENGLISH.pieces:
        assert template_fields([CHINESE.pieces[piece]]) == template_fields([ENGLISH.pieces[piece]])


@pytest.mark.parametrize("scenario", list(demo.SCENARIOS))
def test_chinese_story_uses_the_chapter_terms(scenario: str) -> None:
    story = "".join(CHINESE.tell(scenario, facts_for(scenario)))
    missing = [term for term in CHAPTER_TERMS[scenario] if term not in story]
    assert not missing, story
    assert "三次握手" not in story.replace("“三次握手”", "")  # the chapter's point: one handshake


def test_a_boolean_piece_is_there_only_when_true() -> None:
    assert "FIN,ACK did both" in ENGLISH.tell("close", facts_for("close", same=True))[0]
    assert "did both" not in ENGLISH.tell("close", facts_for("close", same=False))[0]
    assert "一次做了两件事" not in CHINESE.tell("close", facts_for("close", same=False))[0]


def columns(line: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in line)


@pytest.mark.parametrize("scenario", list(demo.SCENARIOS))
def test_wide_fill_keeps_to_the_columns_and_every_character(scenario: str) -> None:
    for paragraph in CHINESE.tell(scenario, facts_for(scenario)):
        lines = fill_wide(paragraph, 100, "  ").splitlines()
        assert all(line.startswith("  ") for line in lines)
        assert all(columns(line) <= 100 for line in lines), lines
        assert all(not line.lstrip().startswith(("，", "。", "）", "：")) for line in lines)
        joined = "".join(line[2:] for line in lines)
        assert joined.replace(" ", "") == paragraph.replace(" ", "")


def test_wide_fill_keeps_ascii_words_whole() -> None:
    text = "状态" * 20 + " in:drop:flags~ACK,state=SYN-RECEIVED 规则"
    lines = fill_wide(text, 100, "").splitlines()
    assert lines == ["状态" * 20, "in:drop:flags~ACK,state=SYN-RECEIVED 规则"]


def test_unknown_language_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        demo.main(["handshake", "--lang", "fr"])
    out, err = capsys.readouterr()
    assert exit_.value.code == 2 and out == ""
    assert err.splitlines() == ["tcpstack: error: argument --lang: invalid choice: 'fr' "
                                "(choose from 'en', 'zh')"]

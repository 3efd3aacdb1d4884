"""What `tcpstack demo` says about a run, in each language it speaks (`--lang`).

The demo computes a scenario's facts from the run (`demo.Scenario.explain`: the
ISNs, the times, the stack's path of states, its counters) and tells the story
with the texts here, so a language is data: a `Texts` in `TEXTS`, nothing to
change in the code. The stories are `str.format` templates over those facts.

`zh` tells the stories in the terms of the textbook chapter the scenarios come
from (a Chinese textbook's section on TCP connection management): 三报文握手
rather than the common but misleading 三次握手 (the chapter says why: it is one
handshake with three segments), the states as the chapter names them
(SYN-SENT 同步已发送, SYN-RCVD 同步收到, ESTABLISHED 已建立连接; the ladder
prints RFC 9293's SYN-RECEIVED), 连接请求报文段, 确认报文段, 已失效的连接请求报文段.
The chapter stops at connection establishment; for the release (`close`) the
states carry the names the same textbook gives them in its next section
(终止等待 FIN-WAIT, 关闭等待 CLOSE-WAIT, 最后确认 LAST-ACK, 时间等待 TIME-WAIT).
"""

# ruff: noqa: RUF001  (Chinese is written with fullwidth punctuation)
from __future__ import annotations

import re
import string
import textwrap
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def fill_words(text: str, width: int, indent: str) -> str:
    """Wrap at spaces (English); never at hyphens, which join FIN-WAIT-1 and x+1."""
    return textwrap.fill(text, width, initial_indent=indent, subsequent_indent=indent,
                         break_on_hyphens=False)


#: A run of printable ASCII without spaces (a word, a number, seq=x+1) is kept
#: whole, and so is punctuation with what it belongs to (an opening parenthesis
#: with what follows, a comma with what precedes); a line may break before any
#: other character.
_TOKEN = re.compile(r"\s+|[（“「『《‘]*(?:[!-~]+|\S)[，。、；：？！）」』”’》]*")


def _columns(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def fill_wide(text: str, width: int, indent: str) -> str:
    """Wrap Chinese text to `width` terminal columns: a CJK character takes two
    and a line may end after any of them (textwrap only breaks at spaces, so it
    would leave a whole paragraph on one line)."""
    lines: list[str] = []
    line = indent
    for token in _TOKEN.findall(text):
        if token.isspace():
            token = " "
            if line == indent:
                continue
        elif _columns(line) + _columns(token) > width and line.strip():
            lines.append(line.rstrip())
            line = indent
        line += token
    lines.append(line.rstrip())
    return "\n".join(lines)


@dataclass(frozen=True)
class Texts:
    """One language's words for the demo's explanation."""

    heading: str
    roles: str  # who A and B are, before every story
    #: scenario name -> paragraphs, `str.format` templates over its facts and `pieces`
    stories: dict[str, list[str]]
    #: Named parts of stories, formatted first. A piece named like a boolean fact
    #: is its text when the fact is true and empty when false.
    pieces: dict[str, str]
    fill: Callable[[str, int, str], str]

    def tell(self, scenario: str, facts: dict[str, Any]) -> list[str]:
        """The story of `scenario` with the run's `facts` filled in."""
        story = self.stories[scenario]
        values = dict(facts)
        for name in template_fields(story) & self.pieces.keys():
            piece = self.pieces[name]
            if isinstance(facts.get(name), bool):
                values[name] = piece.format(**facts) if facts[name] else ""
            else:
                values[name] = piece.format(**facts)
        return [paragraph.format(**values) for paragraph in story]


def template_fields(templates: list[str]) -> set[str]:
    """The names that `templates` fill in."""
    return {name for text in templates for _, name, _, _ in string.Formatter().parse(text)
            if name}


ENGLISH = Texts(
    heading="What happened",
    roles="As in the textbook chapter, A is the client (Linux's TCP, the left lifeline) and B "
          "the server (tcpstack, the right one).",
    pieces={
        "isns": "x = {x} is the client's initial sequence number (Linux chose it), y = {y} the "
        "stack's (RFC 6528: a clock plus a keyed hash of the 4-tuple)",
        "same": " (here A's FIN,ACK did both at once: it acknowledged B's FIN and carried A's "
        "own)",
    },
    stories={
        "handshake": [
            "Here A is a Python socket at {client}, B the echo app at {server}. {isns}. SYN "
            "seq=x is A's connection request; a SYN carries no data but consumes one sequence "
            "number, so B's answer acknowledges ack=x+1, and B's own SYN (in the same segment, "
            "with ACK set) consumes y, so B's data starts at y+1. A's third segment, ACK "
            "seq=x+1 ack=y+1, carries no data and consumes nothing: A's first data byte is "
            "again x+1 (the next arrow, len={sent_len}).",
            "A was ESTABLISHED (connect() returned after {connected:.6f} s) as soon as the "
            "SYN,ACK arrived; B only when the third segment did (the trace's 'ACK of SYN+ACK "
            "received'): until then B has committed nothing but a half-open entry. The line "
            "came back ({received!r}); A closed first (FIN-WAIT-1, FIN-WAIT-2, TIME-WAIT, "
            "which Linux holds for 60 s after the last arrow), the echo app closed on "
            "end-of-file, and B's path was {path}.",
        ],
        "four-segment": [
            "With --split-synack, B splits its SYN,ACK as the textbook chapter allows: first ACK "
            "seq=y "
            "ack=x+1, acknowledging A's SYN, then SYN seq=y on its own. The textbook chapter "
            "says the "
            "effect is the same. {isns}.",
            "Linux does not reassemble the two. In SYN-SENT it drops a segment that has "
            "neither SYN nor RST (RFC 9293 3.10.7.3), so the bare ACK is ignored; the lone SYN "
            "then looks like the other side opening at the same time, a simultaneous open: A "
            "moves to SYN-RECEIVED and sends a SYN,ACK of its own, seq=x (its SYN again) "
            "ack=y+1. B, in SYN-RECEIVED, takes that as the ACK of its SYN (ESTABLISHED, per "
            "the trace) and answers ACK seq=y+1 ack=x+1, which establishes A: connect() "
            "returned after {connected:.6f} s. Five segments instead of four, and no timer: "
            "the handshake took {handshake_ms:.3f} ms. Then the line was echoed and closed as "
            "in `demo handshake`; B's path: {path}.",
        ],
        "lost-third": [
            "{isns}. The rule in:drop:flags~ACK,state=SYN-RECEIVED throws away every segment "
            "with ACK that reaches B while B is in SYN-RECEIVED, before B's TCP sees it (the "
            "capture sits outside the impairment, so the {lost} lost ACKs are drawn, stopping "
            "short). A's connect() returned as soon as the SYN,ACK arrived ({connected:.6f} "
            "s): A is ESTABLISHED, B is not, and cannot send data. This client stays silent "
            "(it only calls recv()), so all it sends are those bare ACKs; data would be lost "
            "as well, since flags~ACK matches every segment that carries an ACK: the textbook "
            "chapter's "
            "'no matter whether the client sends data or not'.",
            "As the textbook chapter says, B's timer resends the same SYN,ACK seq=y ack=x+1 "
            "({times}: with "
            "--synack-retries 2 the interval doubles, 1 s then 2 s), and A answers each with "
            "another ACK, lost too. When the last timer ran out ({rst_at}) B gave up: RST "
            "seq=y+1, CLOSED (the trace's cause says so). A's recv() failed with {error} after "
            "{error_at:.3f} s: the client closes too. B's counters: {counters}. (Linux as a "
            "server would drop the half-open connection silently instead of sending RST.)",
        ],
        "stale-syn": [
            "The textbook chapter's stale connection request. A's first SYN (seq=x, x = {x}) was "
            "held "
            "back {delay:g} s by in:delay={delay:g}s:flags=SYN,nth=1, as if stuck in a router. "
            "Linux resent the same SYN after {resent_after:.3f} s; that one got through, the "
            "HTTP/1.0 request was answered, and B (the stack) closed first, so B held "
            "TIME-WAIT, for 2*MSL = {time_wait:g} s with --msl {msl} (ladder 1).",
            "Then the old SYN arrived (ladder 2), after the TIME-WAIT: nothing remembered the "
            "connection, so B's listener took it for a new request, went to SYN-RECEIVED and "
            "answered SYN,ACK seq=y ack=x+1 with a fresh y = {y2} (ladder 1's y was {y}; x is "
            "the same). Without a third segment B would now count the connection as "
            "established and wait for data that never comes, its resources wasted. But A has "
            "no such connection (its socket closed at +{closed:.3f} s), so Linux answered RST "
            "seq=x+1 (seq = the SYN,ACK's ack, RFC 9293 3.10.7.1), and an RST at RCV.NXT in "
            "SYN-RECEIVED sends B straight back to LISTEN, {back_ms:.3f} ms after the stale "
            "SYN arrived. That is the textbook chapter's case for the third segment: B commits "
            "to a "
            "connection only when A confirms it, and A does not confirm one it never asked "
            "for.",
            "Why B closes first here: had A (Linux) closed first, A would hold TIME-WAIT, and "
            "Linux's TIME-WAIT answers the SYN,ACK with an ACK of the old connection instead; "
            "B answers that ACK with an RST of its own, which ends A's TIME-WAIT, and only B's "
            "next SYN,ACK (+1 s) draws the textbook RST (docs/impairment.md, 'The textbook "
            "chapter's scenarios').",
        ],
        "close": [
            "The http app answers an HTTP/1.0 request and then closes first, so B (the stack) "
            "is the side that sends the first FIN: FIN-WAIT-1, FIN-WAIT-2 once A acknowledges "
            "it, and TIME-WAIT when A's own FIN arrives{same}. A, Linux, went CLOSE-WAIT -> "
            "LAST-ACK -> CLOSED, the last when B acknowledged its FIN. A FIN consumes one "
            "sequence number, like a SYN: the ACK of a FIN sent at seq=n is ack=n+1 (plus the "
            "data in the FIN's segment).",
            "B then waits 2*MSL in TIME-WAIT ({time_wait:g} s with --msl {msl}; 60 s by "
            "default, like Linux): long enough to resend the last ACK if A's FIN is "
            "retransmitted, and for old duplicates of this connection to die out before the "
            "same 4-tuple can be used again. The trace shows the timer's transition after the "
            "last segment ({timer}). B's path: {path}. On the wire the whole connection took "
            "{total_ms:.3f} ms; its TIME-WAIT then took {time_wait:g} s.",
        ],
    },
    fill=fill_words,
)

CHINESE = Texts(
    heading="过程说明",
    roles="和教材中一样，主机 A 运行 TCP 客户程序（客户 client：Linux 的 TCP，左边的竖线），"
    "B 运行 TCP 服务器程序（服务器 server：tcpstack，右边的竖线）。梯形图中的状态名按 "
    "RFC 9293 书写：SYN-RECEIVED 即教材中的 SYN-RCVD（同步收到）。",
    pieces={
        "isns": "x = {x} 是 A 选择的初始序号（由 Linux 选择），y = {y} 是 B 的初始序号"
        "（RFC 6528：时钟加上四元组的带密钥散列）",
        "same": "（这里 A 的 FIN,ACK 一次做了两件事：既确认了 B 的 FIN，又带上了 A 自己的 FIN）",
    },
    stories={
        "handshake": [
            "这就是教材中的三报文握手（不是“三次握手”：是一次握手中交换了三个报文段）。"
            "A 是 {client} 上的 Python 套接字，B 是 {server} 上的 echo 应用；"
            "两端最初都处于 CLOSED（关闭）状态，B 先创建传输控制块 TCB，进入 LISTEN（收听）"
            "状态。{isns}。A 发出连接请求报文段，同步位 SYN = 1，seq = x，进入 SYN-SENT"
            "（同步已发送）状态；SYN 报文段不能携带数据，但要消耗掉一个序号。B 的确认报文段"
            "把 SYN 位和 ACK 位都置 1，确认号 ack = x+1，自己的序号 seq = y，同样消耗掉一个"
            "序号，B 进入 SYN-RCVD（同步收到）状态。A 再给出确认：ACK 报文段 seq = x+1，"
            "ack = y+1，不携带数据则不消耗序号，所以 A 的第一个数据字节的序号仍是 x+1"
            "（下一个箭头，len={sent_len}）。",
            "A 收到 B 的确认后就进入 ESTABLISHED（已建立连接）状态（connect() 在 "
            "{connected:.6f} s 后返回）；B 要到收到 A 的确认才进入 ESTABLISHED（trace 中的 "
            "'ACK of SYN+ACK received'），在此之前 B 只分配了一个半开连接的表项。这一行数据"
            "被送回（{received!r}），即数据传送阶段；随后是连接释放：A 先关闭（FIN-WAIT-1"
            "（终止等待1）、FIN-WAIT-2（终止等待2）、TIME-WAIT（时间等待），Linux 在最后一个"
            "箭头之后保持 60 s），echo 应用读到文件结束后关闭。B 的状态变化：{path}。",
        ],
        "four-segment": [
            "教材说：B 发送给 A 的报文段也可拆成两个报文段，先发送一个确认报文段"
            "（ACK = 1，ack = x+1），再发送一个同步报文段（SYN = 1，seq = y），这样就变成了"
            "四报文握手，但效果是一样的。--split-synack 让 B 正是这样做。{isns}。",
            "Linux 并不把两者拼起来：处于 SYN-SENT（同步已发送）状态时，它丢弃既没有 SYN "
            "也没有 RST 的报文段（RFC 9293 3.10.7.3），所以单独的确认报文段被忽略；随后单独的"
            "同步报文段看起来像对方同时发起连接（同时打开）：A 进入 SYN-RCVD（同步收到），"
            "发出自己的 SYN,ACK，seq = x（再次是它的 SYN），ack = y+1。B 在 SYN-RCVD 状态把它"
            "当作对自己 SYN 的确认（trace 显示进入 ESTABLISHED），回答 ACK seq = y+1 "
            "ack = x+1，A 由此进入 ESTABLISHED（已建立连接）：connect() 在 {connected:.6f} s "
            "后返回。实际交换了五个报文段而不是四个，没有用到定时器：握手用了 "
            "{handshake_ms:.3f} ms。之后数据被送回、连接释放，与 `demo handshake` 相同；"
            "B 的状态变化：{path}。",
        ],
        "lost-third": [
            "教材问：如果第 3 个报文段丢失了，怎么处理？{isns}。规则 "
            "in:drop:flags~ACK,state=SYN-RECEIVED 在 B 处于 SYN-RCVD（同步收到）状态时，把到达 "
            "B 的每个带 ACK 的报文段在 B 的 TCP 看到之前丢弃（抓包点在损伤之外，所以图中画出了 "
            "{lost} 个丢失的 ACK，箭头没有到达）。A 的 connect() 在收到 SYN,ACK 后就返回了"
            "（{connected:.6f} s）：A 已进入 ESTABLISHED（已建立连接），B 却没有，因此不能传送"
            "数据。这个客户不发数据（只调用 recv()），发出的只有这些确认报文段；即使发送数据"
            "也同样会丢失，因为 flags~ACK 匹配所有带 ACK 的报文段：正是教材说的“不论客户端"
            "主动发送数据与否”。",
            "正如教材所说，服务器有定时器，重新发送第二个报文段 SYN+ACK，seq = y，ack = x+1"
            "（{times}：--synack-retries 2，间隔加倍，先 1 s 再 2 s），A 对每一个都再发确认，"
            "也都丢失了。一直不成功，超时之后（{rst_at}）B 给客户发送 RST 报文段强制关闭 TCP "
            "连接（seq = y+1），进入 CLOSED（关闭）状态（trace 中写明了原因）。A 的 recv() 在 "
            "{error_at:.3f} s 后失败，错误为 {error}：这时客户端也关闭了连接。B 的计数器："
            "{counters}。（Linux 作为服务器时会悄悄丢弃这个半开连接，而不发送 RST。）",
        ],
        "stale-syn": [
            "教材中“已失效的连接请求报文段”。A 发出的第一个连接请求报文段（seq = x，x = {x}）"
            "被 in:delay={delay:g}s:flags=SYN,nth=1 扣留了 {delay:g} s，就像在某些网络结点长时间"
            "滞留了。Linux 在 {resent_after:.3f} s 后重传了同一个连接请求，这一个到达了 B，"
            "HTTP/1.0 请求得到回答，B（tcpstack）先关闭，于是由 B 处于 TIME-WAIT（时间等待）"
            "状态，2*MSL = {time_wait:g} s（--msl {msl}）（梯形图 1）。",
            "然后这个已失效的连接请求报文段在连接释放以后才到达 B（梯形图 2）：TIME-WAIT 已经"
            "结束，没有任何记录，B 的监听进程误认为是 A 又发出一次新的连接请求，进入 SYN-RCVD"
            "（同步收到），向 A 发出确认报文段 SYN,ACK seq = y ack = x+1，y = {y2} 是新的初始"
            "序号（梯形图 1 中 y 是 {y}；x 相同）。假如不采用三报文握手，那么只要 B 发出确认，"
            "新的连接就建立了，B 会一直等待 A 发来数据，B 的许多资源就这样白白浪费了。但 A "
            "并没有发出建立连接的请求（它的套接字在 +{closed:.3f} s 已经关闭），所以 Linux "
            "回答 RST seq = x+1（seq 等于 SYN,ACK 的 ack，RFC 9293 3.10.7.1）；B 在 SYN-RCVD "
            "状态收到序号等于 RCV.NXT 的 RST，就直接回到 LISTEN（收听）状态，距离失效的 SYN "
            "到达 {back_ms:.3f} ms。这就是 A 最后还要发送一次确认的原因：B 收不到确认，就知道 "
            "A 并没有要求建立连接。",
            "为什么这里让 B 先关闭：如果 A（Linux）先关闭，A 就处于 TIME-WAIT，Linux 在 "
            "TIME-WAIT 状态会用旧连接的 ACK 回答这个 SYN,ACK；B 再用 RST 回答这个 ACK，结束 "
            "A 的 TIME-WAIT，要到 B 下一次重传 SYN,ACK（+1 s）才会引出教材中的 RST。",
        ],
        "close": [
            "连接释放。http 应用回答一个 HTTP/1.0 请求后先关闭，所以 B（tcpstack）先发出 FIN："
            "进入 FIN-WAIT-1（终止等待1），A 确认后进入 FIN-WAIT-2（终止等待2），A 自己的 FIN "
            "到达时进入 TIME-WAIT（时间等待）{same}。A（Linux）经过 CLOSE-WAIT（关闭等待）-> "
            "LAST-ACK（最后确认）-> CLOSED（关闭），最后一步在 B 确认了它的 FIN 时。FIN 和 SYN "
            "一样要消耗掉一个序号：对序号为 n 的 FIN 的确认号是 ack = n+1（再加上 FIN 报文段中"
            "的数据）。",
            "B 随后在 TIME-WAIT（时间等待）状态等待 2*MSL（--msl {msl} 时为 {time_wait:g} s；"
            "默认 60 s，与 Linux 相同）：足以在 A 的 FIN 重传时重发最后的确认，也让本连接的旧"
            "报文段在同一个四元组再次使用前全部消失。trace 显示最后一个报文段之后定时器引起的"
            "状态变化（{timer}）。B 的状态变化：{path}。整个连接在线路上用了 {total_ms:.3f} ms，"
            "随后的 TIME-WAIT 用了 {time_wait:g} s。",
        ],
    },
    fill=fill_wide,
)

#: `--lang` -> the texts; the first is the default.
TEXTS: dict[str, Texts] = {"en": ENGLISH, "zh": CHINESE}

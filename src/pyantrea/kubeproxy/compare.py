"""The kube-proxy model (`build_rules`/`render_iptables`) against what a real kube-proxy programs.

`compare_nat(model_save, real_save)` reads two ``iptables-save -t nat`` texts and compares their
KUBE-* chains chain by chain: the chains' names, and each chain's rules as (matches, target) in
order (KUBE-SERVICES' ClusterIP portals as a set: they match disjoint destinations, and kube-proxy
orders them by its own map iteration; its last rule, the jump to KUBE-NODEPORTS, last in both).
Matches are compared as options, not text (`-m tcp` and option order aside; probabilities as
numbers). It returns the differences left after the known ones, which are the real kube-proxy's
newer behaviour against the v1.18 one the model follows (Antrea v0.10's time), each explained:

- ``KUBE-PROXY-CANARY``: an empty chain kube-proxy >= 1.17 creates and polls to notice that
  something flushed its tables. No rule, no traffic: ignored.
- The masquerade mark for ClusterIP traffic from outside the cluster CIDR: v1.18 puts
  ``! -s CIDR ... -j KUBE-MARK-MASQ`` in KUBE-SERVICES just before the portal's jump; newer
  kube-proxy makes it the first rule of the Service's KUBE-SVC-* chain. Same packets marked; the
  model's rule is moved to the front of the chain its next rule jumps to before comparing.
- The comment of a KUBE-SVC-* rule picking an endpoint: newer kube-proxy writes ``NAME -> IP:PORT``,
  the model ``NAME``. The comment is compared without the `` -> IP:PORT`` tail.
- ``MASQUERADE --random-fully`` in KUBE-POSTROUTING (kube-proxy >= 1.16 when iptables has it):
  fully random source ports for the SNAT; the model writes plain MASQUERADE. ``--random-fully`` is
  dropped before comparing.
- ``MARK --or-mark X`` / ``--xor-mark X`` are what iptables-save prints as ``--set-xmark X/X`` and
  ``--set-xmark X/0x0``: compared as the latter.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

KNOWN_EXTRA_CHAINS = frozenset({"KUBE-PROXY-CANARY"})


@dataclass(frozen=True)
class NatRule:
    matches: frozenset[tuple[str, str]]
    target: tuple[str, ...]

    def text(self) -> str:
        return " ".join(f"{k}={v}" if v else k for k, v in sorted(self.matches)) + " -> " + " ".join(self.target)


def _parse_rule(args: list[str]) -> NatRule:
    matches: set[tuple[str, str]] = set()
    target: list[str] = []
    neg = False
    i = 0
    while i < len(args):
        a = args[i]
        if a == "!":
            neg = True
            i += 1
            continue
        if a == "-m":  # a match module: its options follow; the module name itself is implied by them
            i += 2
            continue
        if a == "-j":
            target = args[i + 1:]
            break
        if a.startswith("-"):
            key = a.lstrip("-")
            key = {"s": "src", "d": "dst", "p": "protocol", "source": "src", "destination": "dst"}.get(key, key)
            val = args[i + 1] if i + 1 < len(args) and not args[i + 1].startswith("-") else ""
            i += 2 if val else 1
            if key == "probability":
                val = f"{float(val):.5f}"
            if key == "mode":
                continue
            if key == "comment":
                val = val.split(" -> ")[0]  # newer kube-proxy: "NAME -> IP:PORT" on endpoint picks
            matches.add(("!" + key if neg else key, val))
            neg = False
            continue
        i += 1
    t = [x for x in target if x != "--random-fully"]
    if t[:2] == ["MARK", "--or-mark"]:
        t = ["MARK", "--set-xmark", f"{t[2]}/{t[2]}"]
    elif t[:2] == ["MARK", "--xor-mark"]:
        t = ["MARK", "--set-xmark", f"{t[2]}/0x0"]
    return NatRule(frozenset(matches), tuple(t))


def parse_nat(save: str) -> dict[str, list[NatRule]]:
    """The KUBE-* chains of the nat table of an iptables-save text, each with its rules in order."""
    chains: dict[str, list[NatRule]] = {}
    table = None
    for line in save.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif table != "nat":
            continue
        elif line.startswith(":KUBE-"):
            chains.setdefault(line[1:].split()[0], [])
        elif line.startswith("-A KUBE-"):
            parts = shlex.split(line)
            chains.setdefault(parts[1], []).append(_parse_rule(parts[2:]))
    return chains


def _move_masq_into_svc(chains: dict[str, list[NatRule]]) -> dict[str, list[NatRule]]:
    """The model's (v1.18) KUBE-SERVICES masquerade rules moved to the front of the KUBE-SVC-* chain
    the following portal rule jumps to, where newer kube-proxy has them."""
    out = {k: list(v) for k, v in chains.items()}
    services = out.get("KUBE-SERVICES", [])
    kept: list[NatRule] = []
    front: dict[str, list[NatRule]] = {}
    for i, r in enumerate(services):
        nxt = services[i + 1] if i + 1 < len(services) else None
        if r.target == ("KUBE-MARK-MASQ",) and nxt is not None and nxt.target[0].startswith("KUBE-SVC-") \
                and r.matches - {m for m in r.matches if m[0] == "!src"} == nxt.matches:
            front.setdefault(nxt.target[0], []).append(r)
        else:
            kept.append(r)
    out["KUBE-SERVICES"] = kept
    for chain, rules in front.items():
        out[chain] = rules + out.get(chain, [])
    return out


def compare_nat(model_save: str, real_save: str) -> list[str]:
    """The differences of the KUBE-* nat chains of ``model_save`` and ``real_save`` after the known
    ones (see the module's docstring); empty when they agree."""
    model = _move_masq_into_svc(parse_nat(model_save))
    real = {k: v for k, v in parse_nat(real_save).items() if k not in KNOWN_EXTRA_CHAINS}
    diffs: list[str] = []
    for c in sorted(set(model) - set(real)):
        diffs.append(f"chain {c}: in the model only")
    for c in sorted(set(real) - set(model)):
        diffs.append(f"chain {c}: in the real kube-proxy's rules only")
    for c in sorted(set(model) & set(real)):
        m, r = model[c], real[c]
        if c == "KUBE-SERVICES":  # portals as a set, the nodeports jump last
            if m[-1:] != r[-1:]:
                diffs.append(f"{c}: last rule {[x.text() for x in m[-1:]]} != {[x.text() for x in r[-1:]]}")
            m_set, r_set = set(m[:-1]), set(r[:-1])
            for x in sorted(y.text() for y in m_set - r_set):
                diffs.append(f"{c}: model only: {x}")
            for x in sorted(y.text() for y in r_set - m_set):
                diffs.append(f"{c}: real only: {x}")
            continue
        if m != r:
            diffs.append(f"{c}: model {[x.text() for x in m]} != real {[x.text() for x in r]}")
    return diffs

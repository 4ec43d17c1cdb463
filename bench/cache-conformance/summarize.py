#!/usr/bin/env python3
"""Builds SUMMARY.md from http-tests/cache-tests results (<impl>.json in a results directory,
as run.sh writes them). Test metadata (kind, depends_on, spec anchors) is read from the suite."""
import argparse, json, os, subprocess, datetime

IMPLS = [('outpost', 'outpost'), ('ats', 'ATS'), ('nginx', 'nginx'), ('varnish', 'Varnish')]

# RFC 9111 section numbers for the suite's spec anchors (httpwg.org/specs/rfc9111.html#ANCHOR)
SEC = {
    'caching.overview': '2', 'response.cacheability': '3', 'storing.fields': '3.1',
    'storing.incomplete': '3.3', 'combining.responses': '3.4',
    'caching.authenticated.responses': '3.5', 'constructing.responses.from.caches': '4',
    'caching.negotiated.responses': '4.1', 'expiration.model': '4.2',
    'calculating.freshness.lifetime': '4.2.1', 'heuristic.freshness': '4.2.2',
    'age.calculations': '4.2.3', 'serving.stale.responses': '4.2.4', 'validation.model': '4.3',
    'validation.sent': '4.3.1', 'validation.received': '4.3.2', 'validation.response': '4.3.3',
    'freshening.responses': '4.3.4', 'head.effects': '4.3.5', 'invalidation': '4.4',
    'field.age': '5.1', 'field.cache-control': '5.2', 'cache-request-directive': '5.2.1',
    'cache-request-directive.max-age': '5.2.1.1', 'cache-request-directive.max-stale': '5.2.1.2',
    'cache-request-directive.min-fresh': '5.2.1.3', 'cache-request-directive.no-cache': '5.2.1.4',
    'cache-request-directive.no-store': '5.2.1.5', 'cache-request-directive.only-if-cached': '5.2.1.7',
    'cache-response-directive': '5.2.2', 'cache-response-directive.max-age': '5.2.2.1',
    'cache-response-directive.must-revalidate': '5.2.2.2',
    'cache-response-directive.must-understand': '5.2.2.3',
    'cache-response-directive.no-cache': '5.2.2.4', 'cache-response-directive.no-store': '5.2.2.5',
    'cache-response-directive.private': '5.2.2.7',
    'cache-response-directive.proxy-revalidate': '5.2.2.8',
    'cache-response-directive.public': '5.2.2.9', 'cache-response-directive.s-maxage': '5.2.2.10',
    'cache.control.extensions': '5.2.3', 'field.expires': '5.3', 'field.pragma': '5.4',
    'delta-seconds': '1.2.2',
}

SETUP_NOTES = """## Setup

- Origin: the suite's own server (`test-engine/server/server.mjs`); client: `test-engine/cli.mjs`.
- outpost: `outpost edge --workers 1`, one application with one cache rule (cache by the RFC,
  default key) and the origin as its only upstream; everything else at the edge's defaults
  (`outpost.yaml.tpl`, the rendered file is `outpost.yaml` in the results directory).
- Apache Traffic Server: the stock `records.config` plus `ats-records.override` (port, reverse
  proxy, `remap_required`), one `map` rule to the origin, a 128 MB cache file; all caching
  settings at their defaults.
- nginx: `proxy_cache` with `proxy_cache_revalidate on` and `proxy_http_version 1.1`, as in the
  suite's `docker/nginx/nginx.conf`.
- Varnish: the builtin VCL with only the backend set, and the parameters of the suite's
  `docker/serve.sh` (`default_ttl=0 default_grace=0 default_keep=3600`, `-s malloc,64M`).
- Test kinds are the suite's own (`kind`; absent = required). A `Setup` failure means the
  precondition did not happen (usually: the first response was not stored), so the behaviour
  under test could not be observed.
"""


def cite(anchors):
    out = []
    for a in anchors:
        if a.startswith('http'):
            if 'rfc5861' in a:
                out.append('RFC 5861 §3')
            elif 'rfc9213' in a:
                out.append('RFC 9213')
            elif 'rfc8246' in a:
                out.append('RFC 8246 §2')
            else:
                out.append(a)
        elif a == 'field.date':
            out.append('RFC 9110 §6.6.1 (Date)')
        elif a in SEC:
            out.append(f'RFC 9111 §{SEC[a]} ({a})')
        else:
            out.append(f'RFC 9111 #{a}')
    return '; '.join(out)


DUMP_TESTS_JS = r"""
import { pathToFileURL } from 'node:url'
const { default: tests } = await import(pathToFileURL(process.argv[1] + '/tests/index.mjs'))
const out = []
for (const suite of tests) {
  for (const t of suite.tests) {
    out.push({
      id: t.id, name: t.name, kind: t.kind || 'required',
      spec_anchors: t.spec_anchors || [], suite_anchors: suite.spec_anchors || [],
      depends_on: t.depends_on || [], suite: suite.id, browser_only: t.browser_only === true
    })
  }
}
console.log(JSON.stringify(out))
"""


def load_meta(suite):
    out = subprocess.run(['node', '--no-warnings', '--input-type=module', '-e', DUMP_TESTS_JS,
                          os.path.abspath(suite)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def category(meta_by_id, tid, results, honor=True, seen=None):
    """Mirrors test-engine/lib/results.mjs determineTestResult."""
    seen = seen or set()
    t = meta_by_id[tid]
    r = results.get(tid)
    if r is None:
        return 'untested'
    if honor:
        for dep in t['depends_on']:
            if dep in seen or dep not in meta_by_id:
                continue
            if category(meta_by_id, dep, results, True, seen | {tid}) not in ('pass', 'yes'):
                return 'dependency_fail'
    if isinstance(r, list) and r[0] == 'Setup':
        return 'retry' if r[1] == 'retry' else 'setup_fail'
    kind = t['kind']
    if kind == 'required':
        return 'pass' if r is True else 'fail'
    if kind == 'optimal':
        return 'pass' if r is True else 'optional_fail'
    return 'yes' if r is True else 'no'


SYM = {'pass': '✅ pass', 'fail': '⛔ FAIL', 'optional_fail': '⚠️ fail (optimal)', 'yes': 'Y',
       'no': 'N', 'setup_fail': '🔹 setup', 'dependency_fail': '⚪ dep', 'retry': '↻ retry',
       'untested': '–', 'n/a': 'n/a'}


def msg(r):
    if r is True or r is None:
        return ''
    return f'{r[0]}: {r[1]}' if isinstance(r, list) else str(r)


def md_escape(s):
    return s.replace('|', '\\|').replace('\n', ' ')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--results', required=True)
    ap.add_argument('--suite', required=True)
    ap.add_argument('--out', required=True)
    ap.add_argument('--repeats', nargs='*', default=[], help='other result dirs (same layout) to check stability')
    a = ap.parse_args()
    all_meta = load_meta(a.suite)
    meta = [m for m in all_meta if not m['browser_only']]
    by_id = {m['id']: m for m in meta}
    res = {}
    for key, _ in IMPLS:
        p = os.path.join(a.results, f'{key}.json')
        if os.path.exists(p):
            try:
                res[key] = json.load(open(p))
            except Exception:
                pass
    impls = [(k, n) for k, n in IMPLS if k in res]
    cats = {k: {m['id']: category(by_id, m['id'], res[k]) for m in meta} for k, _ in impls}
    raw = {k: {m['id']: ('untested' if m['id'] not in res[k] else ('pass' if res[k][m['id']] is True
               else ('setup' if isinstance(res[k][m['id']], list) and res[k][m['id']][0] == 'Setup' else 'fail')))
               for m in meta} for k, _ in impls}

    L = []
    L.append('# HTTP cache conformance: http-tests/cache-tests against outpost, ATS, nginx, Varnish\n')
    L.append(f'Generated {datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")} by '
             f'`bench/cache-conformance/summarize.py` from `{a.results}/*.json`.\n')
    L.append('Suite: [http-tests/cache-tests](https://github.com/http-tests/cache-tests) at `%s`, %d tests in %d suites; '
             'browser-only tests are not run against proxies, leaving %d.\n'
             % (os.path.abspath(a.suite), len(all_meta), len({m["suite"] for m in all_meta}), len(meta)))
    vers = os.path.join(a.results, 'versions.txt')
    if os.path.exists(vers):
        L.append('Versions and settings (from `versions.txt`):\n')
        L.extend(f'- {md_escape(line.strip())}' for line in open(vers) if line.strip())
        L.append('')
    L.append('How to read the results: "Raw" counts take each test\'s own result (`true`, or an `Assertion`/`Setup` failure). '
             'The "cache-tests.fyi" columns use the suite\'s own `determineTestResult` logic: a test whose `depends_on` '
             'test did not pass shows as *dependency not met* (⚪), and a `Setup` failure (precondition not met, e.g. '
             'the response was never cached) shows as 🔹. Only ⛔/⚠️ results are real failures of the tested behaviour.\n')

    # ---- counts
    L.append('## Counts by kind\n')
    L.append('### Raw results (pass / assertion fail / setup fail)\n')
    L.append('| implementation | required | optimal | check | total passed |')
    L.append('|---|---|---|---|---|')
    for k, n in impls:
        cells = []
        tot = 0
        for kind in ('required', 'optimal', 'check'):
            ids = [m['id'] for m in meta if m['kind'] == kind]
            p = sum(raw[k][i] == 'pass' for i in ids)
            f = sum(raw[k][i] == 'fail' for i in ids)
            s = sum(raw[k][i] == 'setup' for i in ids)
            u = sum(raw[k][i] == 'untested' for i in ids)
            tot += p
            cells.append(f'{p} / {f} / {s}' + (f' (+{u} not run)' if u else '') + f' of {len(ids)}')
        L.append(f'| {n} | ' + ' | '.join(cells) + f' | {tot} of {len(meta)} |')
    L.append('')
    L.append('### As cache-tests.fyi classifies them (dependencies honoured)\n')
    L.append('| implementation | required: ✅ / ⛔ / 🔹 / ⚪ | optimal: ✅ / ⚠️ / 🔹 / ⚪ | check: Y / N / 🔹 / ⚪ |')
    L.append('|---|---|---|---|')
    for k, n in impls:
        row = []
        for kind, good, bad in (('required', 'pass', 'fail'), ('optimal', 'pass', 'optional_fail'), ('check', 'yes', 'no')):
            ids = [m['id'] for m in meta if m['kind'] == kind]
            c = [cats[k][i] for i in ids]
            row.append(f'{c.count(good)} / {c.count(bad)} / {c.count("setup_fail") + c.count("retry")} / {c.count("dependency_fail")}')
        L.append(f'| {n} | ' + ' | '.join(row) + ' |')
    L.append('')

    # ---- headline comparison
    L.append('## Headline comparisons\n')
    ro = [m['id'] for m in meta if m['kind'] in ('required', 'optimal')]
    line = []
    for k, n in impls:
        line.append(f'**{n}** {sum(raw[k][i] == "pass" for i in ro)}/{len(ro)}')
    L.append('**(b) required + optimal tests passed (raw):** ' + ', '.join(line) + '.\n')
    if 'outpost' in res and 'ats' in res:
        o_only = [i for i in ro if raw['outpost'][i] == 'pass' and raw['ats'][i] != 'pass']
        a_only = [i for i in ro if raw['ats'][i] == 'pass' and raw['outpost'][i] != 'pass']
        L.append(f'- outpost passes {len(o_only)} required/optimal tests that ATS does not; ATS passes {len(a_only)} that outpost does not'
                 + (f' ({", ".join("`"+i+"`" for i in a_only)})' if a_only else '') + '.\n')
    if 'outpost' in res:
        L.append('**(a) required tests outpost fails that nginx or Varnish passes:**\n')
        hits = []
        for m in meta:
            if m['kind'] != 'required' or raw['outpost'][m['id']] == 'pass':
                continue
            peers = [n for k, n in impls if k in ('nginx', 'varnish') and raw[k][m['id']] == 'pass']
            if peers:
                hits.append((m, peers))
        if hits:
            L.append('| test id | name | outpost result | passes on |')
            L.append('|---|---|---|---|')
            for m, peers in hits:
                L.append(f'| `{m["id"]}` | {md_escape(m["name"])} | {SYM[cats["outpost"][m["id"]]]} — {md_escape(msg(res["outpost"].get(m["id"])))} | {", ".join(peers)} |')
        else:
            L.append('None.')
        L.append('')

    # ---- outpost failure table
    if 'outpost' in res:
        for title, kinds in (('Required and optimal tests outpost does not pass', ('required', 'optimal')),
                             ('Check (informational) tests where outpost answers "no" or could not be assessed', ('check',))):
            L.append(f'## {title}\n')
            L.append('Peer cells: cache-tests.fyi classification, and the runner\'s message when it failed.\n')
            L.append('| test id | name | kind | spec | outpost (runner message) | ' + ' | '.join(n for k, n in impls if k != 'outpost') + ' |')
            L.append('|---|---|---|---|---|' + '---|' * (len(impls) - 1))
            for m in meta:
                if m['kind'] not in kinds or raw['outpost'][m['id']] == 'pass':
                    continue
                r = res['outpost'].get(m['id'])
                peers = []
                for k, n in impls:
                    if k == 'outpost':
                        continue
                    c = SYM[cats[k][m['id']]]
                    mm = msg(res[k].get(m['id']))
                    peers.append(md_escape(c + (f' — {mm}' if mm else '')))
                L.append(f'| `{m["id"]}` | {md_escape(m["name"])} | {m["kind"]} | {cite(m["spec_anchors"] or m["suite_anchors"])} | '
                         f'{SYM[cats["outpost"][m["id"]]]} — {md_escape(msg(r))} | ' + ' | '.join(peers) + ' |')
            L.append('')
    # ---- stability across repeated runs
    reps = [d for d in a.repeats if os.path.isdir(d)]
    if reps:
        L.append('## Stability across repeated runs\n')
        L.append(f'Primary results above are from `{a.results}`; repeats: ' + ', '.join(f'`{d}`' for d in reps) + '. '
                 'A test is *unstable* when its raw outcome (pass / assertion fail / setup fail) differs between runs.\n')
        L.append('| implementation | runs compared | required+optimal passed per run | unstable tests |')
        L.append('|---|---|---|---|')
        unstable_lists = {}
        for k, n in impls:
            runs = [res[k]]
            for d in reps:
                p = os.path.join(d, f'{k}.json')
                if os.path.exists(p):
                    try:
                        runs.append(json.load(open(p)))
                    except Exception:
                        pass
            def outcome(r, i):
                v = r.get(i)
                return 'untested' if v is None else ('pass' if v is True else ('setup' if isinstance(v, list) and v[0] == 'Setup' else 'fail'))
            per_run = [sum(outcome(r, i) == 'pass' for i in ro) for r in runs]
            unstable = [m['id'] for m in meta if len({outcome(r, m['id']) for r in runs}) > 1]
            unstable_lists[n] = unstable
            L.append(f'| {n} | {len(runs)} | {" / ".join(map(str, per_run))} | {len(unstable)}'
                     + (': ' + ', '.join(f'`{i}`' for i in unstable[:25]) + (' …' if len(unstable) > 25 else '') if unstable else '') + ' |')
        L.append('')
    L.append(SETUP_NOTES)
    open(a.out, 'w').write('\n'.join(L) + '\n')


if __name__ == '__main__':
    main()

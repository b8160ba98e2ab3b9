# Drives a real HAProxy (see haproxy.cfg) and records observed behaviour as JSON.
import http.client, json, os, time, sys, re

A = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
def enc_raw(v):  # v = 30-bit quantity
    return ''.join(A[(v >> (24 - 6*i)) & 63] for i in range(5))
def enc_exact(sec):  # a date field that decodes to exactly sec (sec % 4 == 0)
    assert sec % 4 == 0
    return enc_raw(sec >> 2)

LOG = os.environ.get('HAPROXY_LOG', 'haproxy.log')
def log_lines():
    with open(LOG) as f:
        return f.read().splitlines()

def request(port, cookies=None, path='/'):
    """Returns (t0, t1, status, set_cookies, backend_json, logline)."""
    n0 = len(log_lines())
    c = http.client.HTTPConnection('127.0.0.1', port, timeout=5)
    c.putrequest('GET', path)
    for h in cookies or []:
        c.putheader('Cookie', h)
    t0 = int(time.time())
    c.endheaders()
    r = c.getresponse()
    t1 = int(time.time())
    body = r.read()
    sc = r.headers.get_all('Set-Cookie') or []
    cc = r.headers.get_all('Cache-Control') or []
    c.close()
    for _ in range(50):
        ls = log_lines()
        if len(ls) > n0:
            break
        time.sleep(0.02)
    line = ls[-1] if len(ls) > n0 else ''
    return t0, t1, r.status, sc, cc, json.loads(body), line

def wait_aligned(mod=0):
    """Sleep until shortly after a second boundary where unix % 4 == mod."""
    while True:
        now = time.time()
        nxt = int(now) + 1
        if nxt % 4 == mod:
            time.sleep(nxt - now + 0.05)
            return nxt
        time.sleep(nxt - now + 0.001)

def flags(line):
    m = re.search(r' (\S{4}) \d+/\d+/\d+/\d+/\d+ ', line)
    return m.group(1)[2:] if m else ''

out = []
def run(name, port, cfg, mk, mod=None, note=''):
    # mk(now) -> list of Cookie header values; retried until t0 == t1 == predicted now
    for _ in range(10):
        now = wait_aligned(mod) if mod is not None else wait_aligned(int(time.time()+1) % 4)
        hdrs = mk(now)
        t0, t1, st, sc, cc, js, line = request(port, hdrs)
        if t0 == t1 == now:
            out.append(dict(name=name, listen=cfg, now=now, request_cookie=hdrs,
                            set_cookie=sc, cache_control=cc, backend=js['server'],
                            backend_cookie=js['cookie'], log_cookie_flags=flags(line), note=note))
            return
    sys.exit('could not align ' + name)

E = enc_exact
def R(sec):  # what HAProxy itself would write for a request at sec
    return enc_raw((sec + 3) >> 2)

both, idle, life, plain, pfx = 18301, 18302, 18303, 18305, 18304
B, I, L, P = 'dated_both', 'dated_idle', 'dated_life', 'plain'
run('both/no-cookie', both, B, lambda n: [], note='first visit at a non-multiple of 4', mod=1)
run('both/no-cookie-aligned', both, B, lambda n: [], mod=0)
run('both/fresh', both, B, lambda n: ['SRV=s1|%s|%s' % (E(n), E(n-100))], mod=0)
run('both/fresh-roundup', both, B, lambda n: ['SRV=s1|%s|%s' % (R(n), E(n-102))], mod=2, note='last seen = HAProxy encoding of now (rounded up)')
run('both/last-1s-ago', both, B, lambda n: ['SRV=s2|%s|%s' % (E(n-3), E(n-103))], mod=3, note='last = now-3')
run('both/idle-60s', both, B, lambda n: ['SRV=s2|%s|%s' % (E(n-60), E(n-100))], mod=0)
run('both/idle-exactly-max', both, B, lambda n: ['SRV=s1|%s|%s' % (E(n-1800), E(n-2000))], mod=0)
run('both/idle-max-plus-4', both, B, lambda n: ['SRV=s1|%s|%s' % (E(n-1804), E(n-2000))], mod=0)
run('both/idle-max-plus-1', both, B, lambda n: ['SRV=s1|%s|%s' % (E(n-1801), E(n-2001))], mod=1)
run('both/life-exactly-max', both, B, lambda n: ['SRV=s1|%s|%s' % (E(n-8), E(n-28800))], mod=0)
run('both/life-max-plus-4', both, B, lambda n: ['SRV=s1|%s|%s' % (E(n-8), E(n-28804))], mod=0)
run('both/last-future-24h', both, B, lambda n: ['SRV=s1|%s|%s' % (E(n+86400), E(n-100))], mod=0)
run('both/last-future-24h+4', both, B, lambda n: ['SRV=s1|%s|%s' % (E(n+86404), E(n-100))], mod=0)
run('both/first-future-24h', both, B, lambda n: ['SRV=s1|%s|%s' % (E(n), E(n+86400))], mod=0)
run('both/first-future-24h+4', both, B, lambda n: ['SRV=s1|%s|%s' % (E(n), E(n+86404))], mod=0)
run('both/no-dates', both, B, lambda n: ['SRV=s2'], mod=0)
run('both/last-only', both, B, lambda n: ['SRV=s2|%s' % E(n-20)], mod=0)
run('both/last-only-current', both, B, lambda n: ['SRV=s2|%s' % E(n)], mod=0)
run('both/unknown-server-keeps-first', both, B, lambda n: ['SRV=zz|%s|%s' % (E(n-20), E(n-500))], mod=0)
run('both/expired-resets-first', both, B, lambda n: ['SRV=s2|%s|%s' % (E(n-4000), E(n-5000))], mod=0)
run('both/lenient-bad-last', both, B, lambda n: ['SRV=s2|!!!!!|%s' % E(n-500)], mod=0, note='HAProxy ignores an undecodable date')
run('both/lenient-bar-only', both, B, lambda n: ['SRV=s2|'], mod=0)
run('both/lenient-long-last', both, B, lambda n: ['SRV=s2|%sXYZ' % E(n-20)], mod=0)
run('both/lenient-empty-last', both, B, lambda n: ['SRV=s2||%s' % E(n-500)], mod=0)
run('both/zero-dates', both, B, lambda n: ['SRV=s2|AAAAA|AAAAA'], mod=0)
run('both/empty-value', both, B, lambda n: ['SRV='], mod=0)
run('both/quoted', both, B, lambda n: ['SRV="s2"'], mod=0)
run('idle/first-present-removed', idle, I, lambda n: ['SRV=s2|%s|%s' % (E(n), E(n-100))], mod=0)
run('idle/fresh', idle, I, lambda n: ['SRV=s2|%s' % E(n)], mod=0)
run('idle/old-first-ignored', idle, I, lambda n: ['SRV=s2|%s|%s' % (E(n), E(n-1000000))], mod=0)
run('idle/no-dates', idle, I, lambda n: ['SRV=s2'], mod=0)
run('life/last-past', life, L, lambda n: ['SRV=s2|%s|%s' % (E(n-60), E(n-100))], mod=0)
run('life/last-future-unchecked', life, L, lambda n: ['SRV=s2|%s|%s' % (E(n+200000), E(n-100))], mod=0)
run('life/last-current', life, L, lambda n: ['SRV=s2|%s|%s' % (E(n), E(n-100))], mod=0)
run('plain/dated-past', plain, P, lambda n: ['SRV=s2|%s' % E(n-60)], mod=0)
run('plain/dated-future', plain, P, lambda n: ['SRV=s2|%s' % E(n+100)], mod=0)
run('plain/no-dates', plain, P, lambda n: ['SRV=s2'], mod=0)
# indirect: what the backend sees
for i, hs in enumerate([
        ['a=1; SRV=s2; b=2'], ['SRV=s2; b=2'], ['a=1; SRV=s2'], ['SRV=s2'], ['a=1;SRV=s2;b=2'],
        ['a=1; SRV=s2; SRV=s1; b=2'], ['a=1', 'SRV=s2'], ['SRV=s2', 'SRV=s1; c=3'],
        ['a=1;  SRV=s2  ;  b=2'], ['a=1; SRV = s2; b=2'], ['SRV=zz; a=1'], ['a=1, SRV=s2, b=2'],
        ['flag; SRV=s2; b=2'], ['$Version=1; SRV=s2; $Path=/; b=2']]):
    run('indirect/%d' % i, plain, P, lambda n, hs=hs: hs, mod=None)
json.dump(out, sys.stdout, indent=1)

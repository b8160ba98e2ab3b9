import http.client, json, sys, urllib.parse
def req(cookies, sets=()):
    c = http.client.HTTPConnection('127.0.0.1', 18304, timeout=5)
    q = '&'.join('set=' + urllib.parse.quote(s) for s in sets)
    c.putrequest('GET', '/?' + q)
    for h in cookies: c.putheader('Cookie', h)
    c.endheaders(); r = c.getresponse(); js = json.loads(r.read())
    return dict(request_cookie=list(cookies), backend_set_cookie=list(sets),
                set_cookie=r.headers.get_all('Set-Cookie') or [], backend=js['server'], backend_cookie=js['cookie'])
out = []
for ck, sets in [
    ([], ['JSESSIONID=abc123; Path=/']),
    ([], ['JSESSIONID=abc123']),
    ([], ['OTHER=x; Path=/', 'JSESSIONID=; Path=/']),
    ([], ['JSESSIONID="quoted"; Path=/']),
    (['JSESSIONID=s2~abc123; x=1'], []),
    (['x=1; JSESSIONID=s1~abc123'], []),
    (['JSESSIONID=s2~abc123'], ['JSESSIONID=newval; Path=/']),
    (['JSESSIONID=abc123'], []),
    (['JSESSIONID=s2~'], []),
    (['JSESSIONID=s2~a~b'], []),
    (['JSESSIONID=zz~abc'], []),
    (['JSESSIONID=s2~a; JSESSIONID=s1~b'], []),
    (['JSESSIONID="s2~abc"'], []),
]:
    out.append(req(ck, sets))
json.dump(out, sys.stdout, indent=1)

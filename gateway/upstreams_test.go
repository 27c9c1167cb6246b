package gateway_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/gateway"
)

// The files the static upstreams serve: a public one the scope covers,
// and a secret one beside it that it does not.
const (
	publicText = "the public file\n"
	secretText = "TOP SECRET: the admin password is hunter2\n"
)

// staticRoot writes a directory holding public/index.txt,
// public/hello world.txt and admin/secret.txt.
func staticRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for name, text := range map[string]string{
		"public/index.txt":       publicText,
		"public/hello world.txt": publicText,
		"admin/secret.txt":       secretText,
	} {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// needTool finds a program a test runs as a real upstream. Without it the
// test is skipped, except in CI (CI=true), where it fails: CI installs it.
func needTool(t *testing.T, name string, more ...string) string {
	t.Helper()
	for _, p := range append([]string{name}, more...) {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not installed, and CI must run this test (.ci/run installs it)", name)
	}
	t.Skipf("%s is not installed: apt-get install nginx-light runs this test", name)
	return ""
}

// startNginx runs Debian's nginx as a child process (not a daemon) serving
// root on 127.0.0.1, and returns its base URL. The listening socket is the
// test's, handed to nginx (its NGINX variable, as for a binary upgrade),
// so that it accepts from the first connection: no port to guess, nothing
// to wait for.
func startNginx(t *testing.T, root string) string {
	t.Helper()
	bin := needTool(t, "nginx", "/usr/sbin/nginx")
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := ln.(*net.TCPListener).File()
	ln.Close() // the duplicate in f stays open
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;" // the workers read the test's private directories
	}
	conf := fmt.Sprintf(`%s
daemon off;
worker_processes 1;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log notice;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path %[2]s/body; proxy_temp_path %[2]s/proxy; fastcgi_temp_path %[2]s/fastcgi;
  uwsgi_temp_path %[2]s/uwsgi; scgi_temp_path %[2]s/scgi;
  types { text/plain txt; }
  server { listen %[3]s; root %[4]s; }
}
`, user, dir, ln.Addr().String(), root)
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-e", filepath.Join(dir, "error.log"))
	cmd.ExtraFiles = []*os.File{f} // fd 3
	cmd.Env = []string{"NGINX=3;"}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM) // nginx's fast shutdown: its workers stop with it
		cmd.Wait()
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(dir, "error.log")); err == nil {
				t.Logf("nginx's error log:\n%s", b)
			}
		}
	})
	return "http://" + ln.Addr().String()
}

// startPython runs `python3 -m http.server` serving root on a port of its
// choosing, which it prints once it listens.
func startPython(t *testing.T, root string) string {
	t.Helper()
	bin := needTool(t, "python3")
	cmd := exec.Command(bin, "-u", "-m", "http.server", "--bind", "127.0.0.1", "--directory", root, "0")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = io.Discard // one line per request
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	m := regexp.MustCompile(`port (\d+)`).FindStringSubmatch(line)
	if err != nil || m == nil {
		t.Fatalf("python3 -m http.server did not say where it listens: %q %v", line, err)
	}
	go io.Copy(io.Discard, out)
	return "http://127.0.0.1:" + m[1]
}

// rawGet sends a GET for target exactly as written (no client cleans or
// re-escapes it) to the server at base, and returns the status and body.
func rawGet(t *testing.T, base, target, token string) (int, string) {
	t.Helper()
	code, body, err := tryRawGet(base, target, token)
	if err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
	return code, body
}

// tryRawGet is rawGet for a server that may not answer at all (Python's
// closes the connection on some paths).
func tryRawGet(base, target, token string) (int, string, error) {
	host := strings.TrimPrefix(base, "http://")
	c, err := net.Dial("tcp", host)
	if err != nil {
		return 0, "", err
	}
	defer c.Close()
	auth := ""
	if token != "" {
		auth = "Authorization: Bearer " + token + "\r\n"
	}
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\n%sConnection: close\r\n\r\n", target, host, auth)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// pathAttacks are paths that a scope of /public/** must not let reach
// anything outside public/, however an upstream decodes, normalises or
// re-decodes them.
var pathAttacks = []string{
	"/public/..%2Fadmin%2Fsecret.txt",
	"/public/..%2fadmin%2fsecret.txt",
	"/public%2F..%2Fadmin%2Fsecret.txt",
	"/public/..%2F..%2Fadmin%2Fsecret.txt",
	"/public/../admin/secret.txt",
	"/public/%2e%2e/admin/secret.txt",
	"/public/%2E%2E/admin/secret.txt",
	"/public/%2E./admin/secret.txt",
	"/public/.%2e/admin/secret.txt",
	"/public/%252e%252e/admin/secret.txt",
	"/public/%252E%252E%252Fadmin%252Fsecret.txt",
	"/public/%25%32%65%25%32%65/admin/secret.txt",
	"/public/..;/admin/secret.txt",
	"/public/..;x=1/admin/secret.txt",
	"/public/..%3B/admin/secret.txt",
	"/public/..%3F/admin/secret.txt",
	"/public/..%23/admin/secret.txt",
	"/public/..%5Cadmin%5Csecret.txt",
	"/public/..\\admin\\secret.txt",
	"/public/%5C..%5Cadmin%5Csecret.txt",
	"/public/..%00/admin/secret.txt",
	"/public/index.txt%00/../../admin/secret.txt",
	"/public/%c0%ae%c0%ae/admin/secret.txt",
	"/public/%C0%AE%C0%AE%C0%AFadmin%C0%AFsecret.txt",
	"/public/%EF%BC%8E%EF%BC%8E%EF%BC%8Fadmin%EF%BC%8Fsecret.txt",
	"/public/.../admin/secret.txt",
	"/public/.. /admin/secret.txt",
	"/public/..%20/admin/secret.txt",
	"/public/..%09/admin/secret.txt",
	"/public/./../admin/secret.txt",
	"/public//../admin/secret.txt",
	"/public/%2F../admin/secret.txt",
}

// A path scope holds against every upstream: for each attack path, nginx,
// Python's http.server and Go's http.FileServer behind the gateway never
// give the secret, and still serve the public file. Each attack that one
// of them falls for without the gateway shows the test is real.
func TestPathScopeHoldsAgainstRealUpstreams(t *testing.T) {
	root := staticRoot(t)
	gofs := httptest.NewServer(http.FileServer(http.Dir(root)))
	t.Cleanup(gofs.Close)
	upstreams := []struct{ name, url string }{
		{"gofs", gofs.URL},
		{"python", startPython(t, root)},
		{"nginx", startNginx(t, root)},
	}
	e := newEnv(t)
	var routes []gateway.HTTPRoute
	var scopes []string
	for _, u := range upstreams {
		routes = append(routes, gateway.HTTPRoute{Name: u.name, URL: u.url})
		scopes = append(scopes, "http:"+u.name+":GET:/public/**")
	}
	e.regateway(func(c *gateway.Config) { c.Routes, c.HTTPRoutes = nil, routes })
	key := e.agent("reader", "http:*:GET:/**")
	tok := e.mint("reader", key, strings.Join(scopes, " "), time.Minute, false).AccessToken

	fooled := map[string]int{}
	for _, u := range upstreams {
		t.Run(u.name, func(t *testing.T) {
			for _, p := range []string{"/public/index.txt", "/public/hello%20world.txt"} {
				if code, body := rawGet(t, e.gw.URL, "/http/"+u.name+p, tok); code != 200 || body != publicText {
					t.Errorf("GET %s: %d %q, want the public file", p, code, body)
				}
			}
			for _, p := range pathAttacks {
				if _, body, _ := tryRawGet(u.url, p, ""); strings.Contains(body, "TOP SECRET") {
					fooled[u.name]++
				}
				code, body := rawGet(t, e.gw.URL, "/http/"+u.name+p, tok)
				if strings.Contains(body, "TOP SECRET") || code < 400 {
					t.Errorf("GET %s through the gateway: %d %q", p, code, body)
				}
			}
		})
	}
	for _, u := range upstreams {
		if fooled[u.name] == 0 {
			t.Errorf("%s gave the secret for none of the attacks without the gateway: the test proves nothing of it", u.name)
		}
	}
	t.Logf("without the gateway, the upstreams gave the secret for this many of the %d attacks: %v", len(pathAttacks), fooled)
	if n := len(e.events(mandate.EventToolCall)); n != 2*len(upstreams) {
		t.Errorf("%d requests forwarded, want only the %d public ones", n, 2*len(upstreams))
	}
}

// What the scope was checked against is, byte for byte, what the upstream
// receives after the route's base: one canonical spelling, computed once
// (escapes of unreserved characters decoded, other escapes in upper case,
// a literal * escaped).
func TestHTTPRouteForwardsTheMatchedPath(t *testing.T) {
	api, lastURI := recordingAPI(t)
	e := newEnv(t)
	e.regateway(func(c *gateway.Config) {
		c.Routes, c.HTTPRoutes = nil, []gateway.HTTPRoute{{Name: "crm", URL: api.URL + "/v2"}}
	})
	key := e.agent("api", "http:crm:*:/**")
	tok := e.mint("api", key, "http:crm:GET:/**", time.Minute, false).AccessToken
	for sent, want := range map[string]string{
		"/contacts/42":             "/contacts/42",
		"/contacts/%34%32":         "/contacts/42",
		"/%7Euser/a%3bb":           "/~user/a%3Bb",
		"/a;b/c":                   "/a;b/c",
		"/a%2a":                    "/a%2A",
		"/a*":                      "/a%2A",
		"/caf%C3%A9":               "/caf%C3%A9",
		"/q%3fx?q=%2F..%2F":        "/q%3Fx",
		"/":                        "/",
		"":                         "/",
		"/contacts/":               "/contacts/",
		"/%22quoted%22/%7Bx%7D":    "/%22quoted%22/%7Bx%7D",
		"/sub-delims/!$&'()+,;=:@": "/sub-delims/!$&'()+,;=:@",
	} {
		code, body := rawGet(t, e.gw.URL, "/http/crm"+sent, tok)
		if code != 200 {
			t.Errorf("GET %q: %d %s", sent, code, body)
			continue
		}
		uri := lastURI()
		path, query, _ := strings.Cut(uri, "?")
		if path != "/v2"+want {
			t.Errorf("GET %q reached the upstream as %q, want /v2%s", sent, uri, want)
		}
		if _, q, _ := strings.Cut(sent, "?"); query != q {
			t.Errorf("GET %q: the query reached the upstream as %q", sent, query)
		}
		calls := e.events(mandate.EventToolCall)
		if got := calls[len(calls)-1].Event.Resource; got != "http:crm:GET:"+want {
			t.Errorf("GET %q was matched and recorded as %q, want http:crm:GET:%s", sent, got, want)
		}
	}
}

// An encoded slash is refused unless the route opts in
// (HTTPRoute.AllowEncodedSlashes), and even then it never hides a dot
// segment; a backslash and a NUL are refused either way.
func TestHTTPRouteEncodedSlashes(t *testing.T) {
	api, lastURI := recordingAPI(t)
	e := newEnv(t)
	e.regateway(func(c *gateway.Config) {
		c.Routes, c.HTTPRoutes = nil, []gateway.HTTPRoute{{Name: "strict", URL: api.URL}, {Name: "gitlab", URL: api.URL, AllowEncodedSlashes: true}}
	})
	key := e.agent("api", "http:*:*:/**")
	tok := e.mint("api", key, "http:strict:GET:/projects/* http:gitlab:GET:/projects/*", time.Minute, false).AccessToken
	for _, tt := range []struct {
		route, path string
		want        int
	}{
		{"strict", "/projects/group%2Fapp", 400},
		{"strict", "/projects/group%2fapp", 400},
		{"gitlab", "/projects/group%2Fapp", 200},
		{"gitlab", "/projects/group%2fapp", 200},
		{"gitlab", "/projects/..%2Fadmin", 400},
		{"gitlab", "/projects/a%2F..%2F..%2Fadmin", 400},
		{"gitlab", "/projects/a%5Cb", 400},
		{"gitlab", "/projects/a%00b", 400},
		{"gitlab", "/projects/a\\b", 400},
	} {
		code, body := rawGet(t, e.gw.URL, "/http/"+tt.route+tt.path, tok)
		if code != tt.want {
			t.Errorf("%s %s: %d %s, want %d", tt.route, tt.path, code, body, tt.want)
		}
	}
	if uri := lastURI(); uri != "/projects/group%2Fapp" {
		t.Errorf("the upstream got %q, want the escape kept, in upper case", uri)
	}
}

// recordingAPI is an HTTP upstream that answers 200 and remembers the
// request URI it last received, as it received it.
func recordingAPI(t *testing.T) (*httptest.Server, func() string) {
	var mu sync.Mutex
	var uri string
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		uri = r.RequestURI
		mu.Unlock()
	}))
	t.Cleanup(api.Close)
	return api, func() string {
		mu.Lock()
		defer mu.Unlock()
		return uri
	}
}

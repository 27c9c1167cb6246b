package auditcheck

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/mandatehq/mandate/auditlog/layout"
	"github.com/mandatehq/mandate/internal/noredirect"
)

// ErrNotFound is wrapped by a Source's error when the file does not exist
// (for HTTP, a 404 or 410 response). Verify tells a missing file (a
// finding about the log) from any other error (it cannot read the log).
var ErrNotFound = errors.New("not found")

// A Source reads the files of a log in the C2SP tlog-tiles layout. Its
// ReadFile MUST be safe to call from several goroutines at once: Verify
// reads ahead.
type Source interface {
	// ReadFile returns the whole content of the file at path, a path
	// relative to the log's prefix as package layout writes it
	// ("checkpoint", "vkey", "tile/0/000", "tile/entries/x001/234.p/5").
	// It MUST return an error wrapping ErrNotFound when the file does not
	// exist, and any other error when it could not tell. It MUST NOT
	// return more than MaxFileSize(path) bytes: larger files are an error.
	ReadFile(ctx context.Context, path string) ([]byte, error)
}

// Bounds on the files of a log, so that a hostile log cannot make a
// verifier read without end.
const (
	// MaxBundleSize bounds an entry bundle: 256 entries of 2+65535 bytes.
	MaxBundleSize = 17 << 20
	// MaxTileSize bounds a hash tile (a full one is 8 KiB).
	MaxTileSize = 1 << 20
	// MaxSmallFileSize bounds the checkpoint and the verifier key.
	MaxSmallFileSize = 64 << 10
)

// MaxFileSize returns the largest size a Source may return for path.
func MaxFileSize(path string) int64 {
	level, _, _, err := layout.ParseTilePath(path)
	switch {
	case err != nil:
		return MaxSmallFileSize
	case level < 0:
		return MaxBundleSize
	default:
		return MaxTileSize
	}
}

// checkPath refuses what is not a plain relative path: no leading slash,
// no "." or ".." elements, no backslashes.
func checkPath(path string) error {
	if !fs.ValidPath(path) || path == "." || strings.Contains(path, `\`) {
		return fmt.Errorf("auditcheck: invalid path %q", path)
	}
	return nil
}

// DirSource reads a log from a directory, such as one written by
// "mandate audit export". It refuses paths that would leave dir, through
// ".." or through symbolic links.
func DirSource(dir string) Source { return dirSource(dir) }

type dirSource string

func (d dirSource) ReadFile(ctx context.Context, path string) ([]byte, error) {
	if err := checkPath(path); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, err := os.OpenInRoot(string(d), filepath.FromSlash(path))
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		if fi, err := os.Stat(string(d)); err != nil {
			return nil, err // no log directory at all
		} else if !fi.IsDir() {
			return nil, fmt.Errorf("%s: not a directory", string(d))
		}
		return nil, fmt.Errorf("%s: %w", filepath.Join(string(d), path), ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return nil, err
	} else if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", f.Name())
	}
	return readAtMost(f, MaxFileSize(path), f.Name())
}

// errorBody returns what an error response says, briefly: the "message"
// of a JSON error (as Mandate's server writes it) or the first line of
// text, after ": ".
func errorBody(r io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(r, 1024))
	var e struct {
		Message string `json:"message"`
	}
	msg := ""
	if json.Unmarshal(b, &e) == nil && e.Message != "" {
		msg = e.Message
	} else if utf8.Valid(b) {
		msg, _, _ = strings.Cut(string(b), "\n")
	}
	msg = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, strings.TrimSpace(msg))
	if len(msg) > 200 {
		cut := 200
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut] + "…"
	}
	if msg == "" {
		return ""
	}
	return ": " + msg
}

func readAtMost(r io.Reader, max int64, name string) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s: larger than %d bytes", name, max)
	}
	return b, nil
}

// HTTPTransport returns an HTTP transport for an HTTPSource that keeps a
// connection open for each bundle Verify reads at once, where Go's default
// keeps two and so opens and closes a connection for almost every bundle.
func HTTPTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = readAhead(runtime.GOMAXPROCS(0)) + 4 // and the tiles checked in order
	return t
}

// DefaultHTTPTimeout bounds each request of an HTTPSource made with a nil
// client.
const DefaultHTTPTimeout = time.Minute

// HTTPSource reads a log served over HTTP: path p is fetched with a GET of
// baseURL + "/" + p, so baseURL is the log's prefix, for example
// "http://127.0.0.1:7676/audit". A nil client means one with
// DefaultHTTPTimeout per request and HTTPTransport. Redirects are not
// followed, whatever the client: a 3xx is an error, so that the log is
// read from where it was asked for, and a credential the client adds goes
// nowhere else.
func HTTPSource(baseURL string, client *http.Client) Source {
	if client == nil {
		client = &http.Client{Timeout: DefaultHTTPTimeout, Transport: HTTPTransport()}
	}
	return &httpSource{base: strings.TrimRight(baseURL, "/"), client: noredirect.Client(client)}
}

type httpSource struct {
	base   string
	client *http.Client
}

func (s *httpSource) ReadFile(ctx context.Context, path string) ([]byte, error) {
	if err := checkPath(path); err != nil {
		return nil, err
	}
	url := s.base + "/" + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	if path == layout.CheckpointPath {
		req.Header.Set("Cache-Control", "no-cache") // it changes
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone:
		return nil, fmt.Errorf("GET %s: %s: %w", url, resp.Status, ErrNotFound)
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("GET %s: %s%s", url, resp.Status, errorBody(resp.Body))
	}
	max := MaxFileSize(path)
	if resp.ContentLength > max {
		return nil, fmt.Errorf("GET %s: %d bytes, more than %d", url, resp.ContentLength, max)
	}
	return readAtMost(resp.Body, max, "GET "+url)
}

package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestHTTPErrorMapping(t *testing.T) {
	tests := []struct {
		name         string
		status       int
		body         string
		retryAfter   string
		notFound     bool
		unauthorized bool
		temporary    bool
		wantAfter    time.Duration
		msg          string // substring of Error()
	}{
		{name: "404 plain", status: 404, body: "nope", notFound: true, msg: "HTTP 404 Not Found: nope"},
		{name: "manifest unknown", status: 404, body: `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}`,
			notFound: true, msg: `MANIFEST_UNKNOWN: manifest unknown ({"Tag":"x"})`},
		{name: "name unknown on 400", status: 400, body: `{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known"}]}`, notFound: true},
		{name: "blob unknown", status: 404, body: `{"errors":[{"code":"BLOB_UNKNOWN"}]}`, notFound: true},
		{name: "401", status: 401, body: `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, unauthorized: true},
		{name: "403", status: 403, body: "", unauthorized: true},
		{name: "denied on 400", status: 400, body: `{"errors":[{"code":"DENIED"}]}`, unauthorized: true},
		{name: "500", status: 500, temporary: true},
		{name: "502", status: 502, temporary: true},
		{name: "503 retry-after", status: 503, retryAfter: "7", temporary: true, wantAfter: 7 * time.Second},
		{name: "429", status: 429, retryAfter: "2", temporary: true, wantAfter: 2 * time.Second},
		{name: "408", status: 408, temporary: true},
		{name: "501", status: 501},
		{name: "400 toomanyrequests", status: 400, body: `{"errors":[{"code":"TOOMANYREQUESTS"}]}`, temporary: true},
		{name: "400", status: 400, body: `{"errors":[{"code":"MANIFEST_INVALID"}]}`},
		{name: "retry-after garbage", status: 503, retryAfter: "soon", temporary: true},
		{name: "retry-after negative", status: 503, retryAfter: "-3", temporary: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, _ := url.Parse("https://user:secret@r.io/v2/x/manifests/latest?n=5&X-Amz-Signature=abc")
			resp := &http.Response{
				StatusCode: tt.status,
				Header:     http.Header{},
				Body:       io.NopCloser(strings.NewReader(tt.body)),
				Request:    &http.Request{Method: "GET", URL: u},
			}
			if tt.retryAfter != "" {
				resp.Header.Set("Retry-After", tt.retryAfter)
			}
			err := fmt.Errorf("wrapped: %w", newHTTPError(resp))
			if got := errors.Is(err, ErrNotFound); got != tt.notFound {
				t.Errorf("Is(ErrNotFound): got %v, want %v (%v)", got, tt.notFound, err)
			}
			if got := errors.Is(err, ErrUnauthorized); got != tt.unauthorized {
				t.Errorf("Is(ErrUnauthorized): got %v, want %v (%v)", got, tt.unauthorized, err)
			}
			if got := IsTemporary(err); got != tt.temporary {
				t.Errorf("IsTemporary: got %v, want %v (%v)", got, tt.temporary, err)
			}
			var he *HTTPError
			if !errors.As(err, &he) {
				t.Fatalf("errors.As HTTPError: false")
			}
			if he.RetryAfter != tt.wantAfter {
				t.Errorf("RetryAfter: got %v, want %v", he.RetryAfter, tt.wantAfter)
			}
			msg := err.Error()
			if strings.Contains(msg, "secret") || strings.Contains(msg, "abc") || strings.Contains(msg, "user") {
				t.Errorf("message leaks credentials: %q", msg)
			}
			if !strings.Contains(msg, "n=5") || !strings.Contains(msg, "GET https://r.io/v2/x/manifests/latest") {
				t.Errorf("message %q lacks method and URL", msg)
			}
			if tt.msg != "" && !strings.Contains(msg, tt.msg) {
				t.Errorf("message %q lacks %q", msg, tt.msg)
			}
		})
	}
}

func TestRetryAfterDate(t *testing.T) {
	now := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	h := http.Header{"Retry-After": {now.Add(90 * time.Second).Format(http.TimeFormat)}}
	if got, want := parseRetryAfter(h, now), 90*time.Second; got != want {
		t.Errorf("got %v, want %v", got, want)
	}
	h.Set("Retry-After", now.Add(-time.Hour).Format(http.TimeFormat))
	if got := parseRetryAfter(h, now); got != 0 {
		t.Errorf("past date: got %v, want 0", got)
	}
}

func TestIsTemporary(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"canceled", context.Canceled, false},
		{"deadline", fmt.Errorf("x: %w", context.DeadlineExceeded), false},
		{"stalled", &stalledError{timeout: time.Second}, true},
		{"stalled wrapped in url.Error", &url.Error{Op: "Get", URL: "u", Err: &stalledError{}}, true},
		{"reset", &url.Error{Op: "Get", URL: "u", Err: &net.OpError{Op: "read", Err: syscall.ECONNRESET}}, true},
		{"refused", &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, true},
		{"eof", &url.Error{Op: "Get", URL: "u", Err: io.EOF}, true},
		{"unexpected eof", io.ErrUnexpectedEOF, true},
		{"dns not found", &net.DNSError{Err: "no such host", Name: "x", IsNotFound: true}, false},
		{"dns timeout", &net.DNSError{Err: "timeout", Name: "x", IsTimeout: true}, true},
		{"scheme refused", &url.Error{Op: "Get", URL: "u", Err: &schemeError{host: "h", scheme: "http", want: "https"}}, false},
		{"digest", &DigestError{What: "x"}, false},
		{"plain", errors.New("something else"), false},
		{"ping: https refused here, http dial refused", pingErrors{
			&url.Error{Op: "Get", URL: "https://h/v2/", Err: &schemeError{host: "h", scheme: "https", want: "http"}},
			&url.Error{Op: "Get", URL: "http://h/v2/", Err: &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}}}, true},
	}
	for _, tt := range tests {
		if got := IsTemporary(tt.err); got != tt.want {
			t.Errorf("%s: IsTemporary(%v): got %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
}

func TestDigestErrorIs(t *testing.T) {
	err := fmt.Errorf("ctx: %w", &DigestError{What: "manifest x", Want: "sha256:aa", Got: "sha256:bb"})
	if !errors.Is(err, ErrDigestMismatch) {
		t.Errorf("errors.Is(%v, ErrDigestMismatch): false", err)
	}
	if errors.Is(err, ErrNotFound) {
		t.Errorf("a digest mismatch is not ErrNotFound")
	}
}

func TestIsUnreachable(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"refused after retries", fmt.Errorf("gave up after 5 attempts: %w", &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}), true},
		{"stalled", &stalledError{timeout: time.Second}, true},
		{"503", &HTTPError{StatusCode: 503}, true},
		{"dns not found", &url.Error{Op: "Get", URL: "u", Err: &net.DNSError{Err: "no such host", Name: "x", IsNotFound: true}}, true},
		{"404", fmt.Errorf("resolve: %w", &HTTPError{StatusCode: 404}), false},
		{"401", &HTTPError{StatusCode: 401}, false},
		{"403", &HTTPError{StatusCode: 403}, false},
		{"digest", &DigestError{What: "x"}, false},
		{"canceled", fmt.Errorf("x: %w", context.Canceled), false},
		{"deadline", fmt.Errorf("x: %w", context.DeadlineExceeded), false},
		{"scheme refused", &url.Error{Op: "Get", URL: "u", Err: &schemeError{host: "h", scheme: "http", want: "https"}}, false},
		{"plain", errors.New("something else"), false},
		{"ping: https refused here, http dial refused", pingErrors{
			&url.Error{Op: "Get", URL: "https://h/v2/", Err: &schemeError{host: "h", scheme: "https", want: "http"}},
			&url.Error{Op: "Get", URL: "http://h/v2/", Err: &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}}}, true},
	}
	for _, tt := range tests {
		if got := IsUnreachable(tt.err); got != tt.want {
			t.Errorf("%s: IsUnreachable(%v): got %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
}

// pingErrors is an error as go-containerregistry's ping reports the
// failures of both schemes: one error whose Is and As look at each.
type pingErrors []error

func (m pingErrors) Error() string { return fmt.Sprint([]error(m)) }
func (m pingErrors) As(target any) bool {
	for _, err := range m {
		if errors.As(err, target) {
			return true
		}
	}
	return false
}
func (m pingErrors) Is(target error) bool {
	for _, err := range m {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

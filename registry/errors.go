package registry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"
)

// Sentinels callers test with errors.Is, whatever API or layer produced the
// error. fs/ maps them to errnos (ENOENT, EACCES, EIO); the v1 client reuses
// them.
var (
	// ErrNotFound: the repository, tag, manifest or blob does not exist
	// (HTTP 404, or the registry error codes NAME_UNKNOWN, MANIFEST_UNKNOWN,
	// BLOB_UNKNOWN).
	ErrNotFound = errors.New("not found")
	// ErrUnauthorized: the registry refused the request after
	// authentication was tried (HTTP 401 or 403, or a token server that
	// refused the credentials).
	ErrUnauthorized = errors.New("unauthorized")
	// ErrDigestMismatch: bytes served do not hash to the digest they were
	// asked by or announced with. Such bytes are never returned.
	ErrDigestMismatch = errors.New("digest mismatch")
)

// Registry error codes that mean "does not exist".
const (
	codeNameUnknown     = "NAME_UNKNOWN"
	codeManifestUnknown = "MANIFEST_UNKNOWN"
	codeBlobUnknown     = "BLOB_UNKNOWN"
	codeUnauthorized    = "UNAUTHORIZED"
	codeDenied          = "DENIED"
	codeTooManyRequests = "TOOMANYREQUESTS"
	codeUnavailable     = "UNAVAILABLE"
)

// ErrorDetail is one entry of an OCI error body:
// {"errors":[{"code":…,"message":…,"detail":…}]}.
type ErrorDetail struct {
	Code    string          `json:"code"`
	Message string          `json:"message,omitempty"`
	Detail  json.RawMessage `json:"detail,omitempty"`
}

// HTTPError is a registry answer with a status the caller did not want.
// It never holds credentials: URL has no user info and no query values
// other than n and last.
type HTTPError struct {
	Method     string
	URL        string
	StatusCode int
	// Errors is the decoded OCI error body, if the body was one.
	Errors []ErrorDetail
	// Body is the start of a body that was not an OCI error body.
	Body string
	// RetryAfter is the server's Retry-After, 0 if none.
	RetryAfter time.Duration
}

func (e *HTTPError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: HTTP %d %s", e.Method, e.URL, e.StatusCode, http.StatusText(e.StatusCode))
	for i, d := range e.Errors {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(d.Code)
		if d.Message != "" {
			b.WriteString(": " + d.Message)
		}
		if len(d.Detail) > 0 && string(d.Detail) != "null" && len(d.Detail) <= 200 {
			b.WriteString(" (" + string(d.Detail) + ")")
		}
	}
	if len(e.Errors) == 0 && e.Body != "" {
		b.WriteString(": " + e.Body)
	}
	return b.String()
}

func (e *HTTPError) hasCode(codes ...string) bool {
	for _, d := range e.Errors {
		for _, c := range codes {
			if strings.EqualFold(d.Code, c) {
				return true
			}
		}
	}
	return false
}

// Is maps the status and error codes to the package's sentinels.
func (e *HTTPError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.StatusCode == http.StatusNotFound || e.hasCode(codeNameUnknown, codeManifestUnknown, codeBlobUnknown)
	case ErrUnauthorized:
		return e.StatusCode == http.StatusUnauthorized || e.StatusCode == http.StatusForbidden ||
			e.hasCode(codeUnauthorized, codeDenied)
	}
	return false
}

// Temporary reports whether trying again later may succeed: 5xx (except
// 501 and 505), 408 and 429, or another status that is not 401, 403 or 404
// with an error body that only says TOOMANYREQUESTS or UNAVAILABLE.
func (e *HTTPError) Temporary() bool {
	if retryableStatus(e.StatusCode) {
		return true
	}
	switch e.StatusCode {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound:
		return false
	}
	return len(e.Errors) > 0 && e.onlyCodes(codeTooManyRequests, codeUnavailable)
}

func (e *HTTPError) onlyCodes(codes ...string) bool {
	for _, d := range e.Errors {
		ok := false
		for _, c := range codes {
			ok = ok || strings.EqualFold(d.Code, c)
		}
		if !ok {
			return false
		}
	}
	return true
}

// retryableStatus: statuses worth another attempt.
func retryableStatus(code int) bool {
	switch code {
	case http.StatusRequestTimeout, http.StatusTooManyRequests:
		return true
	case http.StatusNotImplemented, http.StatusHTTPVersionNotSupported:
		return false
	}
	return code >= 500 && code <= 599
}

// maxErrorBody bounds how much of an error body is read.
const maxErrorBody = 64 << 10

// newHTTPError reads (a bounded part of) resp's body, closes it and
// describes the response.
func newHTTPError(resp *http.Response) *HTTPError {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	resp.Body.Close()
	e := &HTTPError{StatusCode: resp.StatusCode, RetryAfter: parseRetryAfter(resp.Header, time.Now())}
	if resp.Request != nil {
		e.Method = resp.Request.Method
		e.URL = redactURL(resp.Request.URL)
	}
	var eb struct {
		Errors []ErrorDetail `json:"errors"`
	}
	if json.Unmarshal(body, &eb) == nil && len(eb.Errors) > 0 {
		e.Errors = eb.Errors
	} else {
		e.Body = shortBody(body)
	}
	return e
}

// shortBody is the printable start of a body, for messages.
func shortBody(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return strings.Map(func(r rune) rune {
		if r < ' ' {
			return ' '
		}
		return r
	}, s)
}

var urlParse = url.Parse

// redactURLString is redactURL for a URL in a string.
func redactURLString(s string) string {
	u, err := urlParse(s)
	if err != nil {
		return "<bad URL>"
	}
	return redactURL(u)
}

// redactURL renders u without user info and with query values hidden,
// except the paging parameters n and last (signed storage URLs carry
// credentials in their query).
func redactURL(u *url.URL) string {
	if u == nil {
		return ""
	}
	c := *u
	c.User = nil
	if c.RawQuery != "" {
		q := c.Query()
		for k := range q {
			if k != "n" && k != "last" {
				q[k] = []string{"REDACTED"}
			}
		}
		c.RawQuery = q.Encode()
	}
	c.Fragment = ""
	return c.String()
}

// parseRetryAfter reads Retry-After: delay-seconds or an HTTP date. 0 if
// absent, unparsable or in the past.
func parseRetryAfter(h http.Header, now time.Time) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s <= 0 {
			return 0
		}
		if s > int64(24*time.Hour/time.Second) {
			s = int64(24 * time.Hour / time.Second)
		}
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// fromTransportError turns go-containerregistry's *transport.Error (ping
// and token exchange failures) into an *HTTPError so errors.Is works the
// same everywhere. Other errors are returned as they are.
func fromTransportError(err error) error {
	var te *transport.Error
	if !errors.As(err, &te) {
		return err
	}
	e := &HTTPError{StatusCode: te.StatusCode}
	if te.Request != nil {
		e.Method = te.Request.Method
		e.URL = redactURL(te.Request.URL)
	}
	for _, d := range te.Errors {
		det, _ := json.Marshal(d.Detail)
		e.Errors = append(e.Errors, ErrorDetail{Code: string(d.Code), Message: d.Message, Detail: det})
	}
	if len(e.Errors) == 0 {
		e.Body = shortBody([]byte(te.Error()))
	}
	return e
}

// DigestError says which bytes did not hash to which digest.
type DigestError struct {
	What string        // "manifest repo@sha256:…", "config blob …"
	Want digest.Digest // asked for or announced
	Got  digest.Digest // computed
}

func (e *DigestError) Error() string {
	return fmt.Sprintf("%s: digest mismatch: want %s, got %s", e.What, e.Want, e.Got)
}

// Is makes errors.Is(err, ErrDigestMismatch) true.
func (e *DigestError) Is(target error) bool { return target == ErrDigestMismatch }

// errStalled is the cause set when a request saw no bytes for the request
// timeout.
var errStalled = errors.New("no response bytes within the request timeout")

// stalledError is a request that timed out waiting for response bytes.
type stalledError struct{ timeout time.Duration }

func (e *stalledError) Error() string {
	return fmt.Sprintf("no response bytes for %v", e.timeout)
}
func (e *stalledError) Is(target error) bool { return target == errStalled }
func (e *stalledError) Temporary() bool      { return true }
func (e *stalledError) Timeout() bool        { return true }

// IsTemporary reports whether err is worth retrying later: connection
// failures, timeouts and stalls, 5xx, 408 and 429. Never a cancellation or
// deadline of the caller's context, never a TLS verification failure.
func IsTemporary(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, errStalled) {
		// Our own watchdog cancelled the request, not the caller.
		return true
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var he *HTTPError
	if errors.As(err, &he) {
		return he.Temporary()
	}
	var te *transport.Error
	if errors.As(err, &te) {
		return te.Temporary()
	}
	var certErr *tls.CertificateVerificationError
	var unknownAuth x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalid x509.CertificateInvalidError
	var recHdr tls.RecordHeaderError
	if errors.As(err, &certErr) || errors.As(err, &unknownAuth) || errors.As(err, &hostErr) ||
		errors.As(err, &invalid) || errors.As(err, &recHdr) {
		return false
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ETIMEDOUT) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH) {
		return true
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return !dnsErr.IsNotFound
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		return true
	}
	// Checked after the network failures: go-containerregistry's ping of a
	// loopback host tries https (which schemeGuard refuses) and http, and
	// reports both; a refused http dial is what counts there.
	var se *schemeError
	if errors.As(err, &se) {
		return false
	}
	// *url.Error is itself a net.Error: look past it.
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	// Go's transport reports a connection that died mid-response in words.
	msg := err.Error()
	return strings.Contains(msg, "connection reset") || strings.Contains(msg, "broken pipe") ||
		strings.Contains(msg, "transport connection broken") || strings.Contains(msg, "server closed idle connection") ||
		strings.Contains(msg, "unexpected EOF")
}

// IsUnreachable reports whether err says the registry could not be reached
// or could not answer: what IsTemporary retries (connection refused or
// reset, timeouts and stalls, 5xx, 408, 429), once the retries are spent,
// and a host name that does not resolve. Not an answer the registry gave on
// purpose (404, 401, 403, a digest mismatch), not a TLS failure, not the
// caller's cancellation or deadline. Callers that keep an older answer may
// serve it instead (regfs's offline mode); they must not remember the error.
func IsUnreachable(err error) bool {
	if IsTemporary(err) {
		return true
	}
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var dnsErr *net.DNSError
	return errors.As(err, &dnsErr)
}

package registrytest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// writeHtpasswd writes an htpasswd file with one bcrypt entry. The minimum
// bcrypt cost keeps tests fast; distribution accepts any cost.
func writeHtpasswd(path string, c Credentials) error {
	if c.User == "" || strings.ContainsAny(c.User, ":\n") {
		return fmt.Errorf("htpasswd: invalid user name %q", c.User)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(c.Password), bcrypt.MinCost)
	if err != nil {
		return fmt.Errorf("htpasswd: hash password: %w", err)
	}
	if err := os.WriteFile(path, []byte(c.User+":"+string(hash)+"\n"), 0o600); err != nil {
		return fmt.Errorf("htpasswd: %w", err)
	}
	return nil
}

// TokenConfig describes the token server that WithTokenAuth starts.
type TokenConfig struct {
	// User and Password is the one account the token server accepts.
	User, Password string
	// AnonymousPull lets requests without credentials have tokens granting
	// "pull" on repositories (never push, never the catalog). Default off:
	// a token request without credentials gets 401.
	AnonymousPull bool
	// Expiry is how long an issued token stays valid at the registry.
	// Default 5 minutes. Distribution accepts a token up to 60 s past its
	// "exp" claim, so for expiries under that the server back-dates "exp"
	// to make the token fail at the registry after Expiry (rounded up to a
	// whole second, at most a second late).
	Expiry time.Duration
}

// TokenOption tunes the token server of WithTokenAuth.
type TokenOption func(*TokenConfig)

// WithAnonymousPull grants pull tokens to requests without credentials.
func WithAnonymousPull() TokenOption { return func(c *TokenConfig) { c.AnonymousPull = true } }

// WithTokenExpiry sets how long tokens stay valid (default 5 minutes); a
// short expiry lets a test see the registry refuse a stale token with 401.
func WithTokenExpiry(d time.Duration) TokenOption { return func(c *TokenConfig) { c.Expiry = d } }

// distributionLeeway is distribution's clock-skew allowance on "exp"
// (token.Leeway).
const distributionLeeway = 60 * time.Second

// TokenRequest is one request the token server answered.
type TokenRequest struct {
	Method string // GET or POST (the OAuth2 form flow)
	// Account is the user the request authenticated as, "" if anonymous.
	Account string
	// Scopes are the scopes asked for, as sent.
	Scopes []string
	// Status is the HTTP status answered (200 when a token was issued).
	Status int
}

// TokenPath is where the registry's own listener serves the token endpoint.
// It shares the registry's host:port because go-containerregistry refuses a
// token realm on another loopback host:port (SSRF protection).
const TokenPath = "/token"

// TokenServer issues JWTs that the registry's token access controller
// accepts: ES256-signed with an x5c header holding a self-signed
// certificate that is the registry's rootcertbundle. It answers at
// TokenPath on the registry's own listener; the registry's challenge names
// the realm after the request's Host, so behind a FaultProxy the realm is
// the proxy's.
type TokenServer struct {
	// URL is the base URL it is served under (the registry's URL).
	URL string
	// Realm is the token endpoint, URL + TokenPath.
	Realm string
	// Service and Issuer are the "service" and "iss" values.
	Service, Issuer string

	rootCertPath string
	key          *ecdsa.PrivateKey
	certDER      []byte

	mu     sync.Mutex
	cfg    TokenConfig
	log    []TokenRequest
	serial int64
}

func newTokenServer(cfg TokenConfig, dir, baseURL string) (*TokenServer, error) {
	if cfg.Expiry <= 0 {
		cfg.Expiry = 5 * time.Minute
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("token server: key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "regfs registrytest token signer"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("token server: certificate: %w", err)
	}
	certPath := filepath.Join(dir, "token-root.pem")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return nil, fmt.Errorf("token server: %w", err)
	}
	ts := &TokenServer{
		URL:          baseURL,
		Realm:        baseURL + TokenPath,
		Service:      "regfs-test-registry",
		Issuer:       "regfs-test-token-issuer",
		rootCertPath: certPath,
		key:          key,
		certDER:      der,
		cfg:          cfg,
	}
	return ts, nil
}

// SetExpiry changes the validity of tokens issued from now on.
func (ts *TokenServer) SetExpiry(d time.Duration) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.cfg.Expiry = d
}

// SetAnonymousPull switches anonymous pull tokens on or off.
func (ts *TokenServer) SetAnonymousPull(on bool) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.cfg.AnonymousPull = on
}

// Requests returns the token requests answered so far, oldest first.
func (ts *TokenServer) Requests() []TokenRequest {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]TokenRequest(nil), ts.log...)
}

// RequestCount is the number of token requests answered so far.
func (ts *TokenServer) RequestCount() int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return len(ts.log)
}

// IssuedCount is the number of tokens issued so far.
func (ts *TokenServer) IssuedCount() int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	n := 0
	for _, r := range ts.log {
		if r.Status == http.StatusOK {
			n++
		}
	}
	return n
}

// ResetRequests clears the request log.
func (ts *TokenServer) ResetRequests() {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.log = nil
}

func (ts *TokenServer) record(r TokenRequest) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if len(ts.log) < MaxLoggedRequests {
		ts.log = append(ts.log, r)
	}
}

// tokenResponse is the body of a token answer: both spellings, as Docker
// Hub sends.
type tokenResponse struct {
	Token        string `json:"token"`
	AccessToken  string `json:"access_token"`
	ExpiresIn    int    `json:"expires_in"`
	IssuedAt     string `json:"issued_at"`
	RefreshToken string `json:"refresh_token,omitempty"`
}

// serveToken answers GET /token?service=&scope=… (Basic credentials
// optional) and the OAuth2 form POST (grant_type=password or
// refresh_token), the two flows clients use.
func (ts *TokenServer) serveToken(w http.ResponseWriter, r *http.Request) {
	req := TokenRequest{Method: r.Method}
	answer := func(status int, body any) {
		req.Status = status
		ts.record(req)
		w.Header().Set("Content-Type", "application/json")
		if status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Basic realm="regfs-test-token"`)
		}
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(body)
	}
	fail := func(status int, code, msg string) {
		answer(status, map[string]any{"errors": []map[string]string{{"code": code, "message": msg}}, "error": code, "details": msg})
	}
	if r.URL.Path != TokenPath {
		fail(http.StatusNotFound, "NOT_FOUND", "no such endpoint")
		return
	}

	ts.mu.Lock()
	cfg := ts.cfg
	ts.mu.Unlock()

	var (
		service     string
		user, pass  string
		credentials bool
	)
	switch r.Method {
	case http.MethodGet:
		q := r.URL.Query()
		service = q.Get("service")
		for _, s := range q["scope"] {
			req.Scopes = append(req.Scopes, strings.Fields(s)...)
		}
		user, pass, credentials = r.BasicAuth()
	case http.MethodPost:
		if err := r.ParseForm(); err != nil {
			fail(http.StatusBadRequest, "UNSUPPORTED", "bad form: "+err.Error())
			return
		}
		service = r.PostForm.Get("service")
		req.Scopes = strings.Fields(r.PostForm.Get("scope"))
		switch r.PostForm.Get("grant_type") {
		case "password":
			user, pass, credentials = r.PostForm.Get("username"), r.PostForm.Get("password"), true
		case "refresh_token":
			// The refresh token we hand out is the password's stand-in.
			user, credentials = r.PostForm.Get("username"), true
			if r.PostForm.Get("refresh_token") == ts.refreshToken(cfg) {
				user, pass = cfg.User, cfg.Password
			}
		default:
			fail(http.StatusBadRequest, "UNSUPPORTED", "unknown grant_type")
			return
		}
	default:
		fail(http.StatusMethodNotAllowed, "UNSUPPORTED", "GET or POST only")
		return
	}
	if service != ts.Service {
		fail(http.StatusBadRequest, "UNSUPPORTED", fmt.Sprintf("unknown service %q", service))
		return
	}
	if credentials {
		if user != cfg.User || pass != cfg.Password {
			fail(http.StatusUnauthorized, "UNAUTHORIZED", "wrong user name or password")
			return
		}
		req.Account = user
	} else if !cfg.AnonymousPull {
		fail(http.StatusUnauthorized, "UNAUTHORIZED", "credentials required")
		return
	}

	access := grantAccess(req.Scopes, req.Account != "")
	now := time.Now()
	token, err := ts.sign(req.Account, access, now, cfg.Expiry)
	if err != nil {
		fail(http.StatusInternalServerError, "UNKNOWN", err.Error())
		return
	}
	resp := tokenResponse{
		Token: token, AccessToken: token,
		ExpiresIn: int(math.Ceil(cfg.Expiry.Seconds())),
		IssuedAt:  now.UTC().Format(time.RFC3339),
	}
	if r.Method == http.MethodPost && req.Account != "" {
		resp.RefreshToken = ts.refreshToken(cfg)
	}
	answer(http.StatusOK, resp)
}

// refreshToken is a stable opaque stand-in for the account's password.
func (ts *TokenServer) refreshToken(cfg TokenConfig) string {
	sum := sha256.Sum256([]byte(ts.URL + "\x00" + cfg.User + "\x00" + cfg.Password))
	return hex.EncodeToString(sum[:16])
}

// resourceActions is one entry of the "access" claim.
type resourceActions struct {
	Type    string   `json:"type"`
	Class   string   `json:"class,omitempty"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

// grantAccess turns scopes ("type[(class)]:name:action,action") into the
// access claim: everything asked for when authenticated; pull on
// repositories only when anonymous.
func grantAccess(scopes []string, authenticated bool) []resourceActions {
	access := []resourceActions{}
	for _, s := range scopes {
		typ, rest, ok := strings.Cut(s, ":")
		i := strings.LastIndex(rest, ":")
		if !ok || i < 0 {
			continue
		}
		name, actions := rest[:i], strings.Split(rest[i+1:], ",")
		class := ""
		if j := strings.Index(typ, "("); j >= 0 && strings.HasSuffix(typ, ")") {
			typ, class = typ[:j], typ[j+1:len(typ)-1]
		}
		var granted []string
		for _, a := range actions {
			if authenticated || (typ == "repository" && a == "pull") {
				granted = append(granted, a)
			}
		}
		if len(granted) > 0 {
			access = append(access, resourceActions{Type: typ, Class: class, Name: name, Actions: granted})
		}
	}
	return access
}

// sign makes an ES256 JWT with the signing certificate in x5c.
func (ts *TokenServer) sign(subject string, access []resourceActions, now time.Time, expiry time.Duration) (string, error) {
	ts.mu.Lock()
	ts.serial++
	serial := ts.serial
	ts.mu.Unlock()

	// Distribution tolerates "exp" up to distributionLeeway in the past;
	// back-date it so the token really stops working after expiry.
	exp := time.Unix(int64(math.Ceil(float64(now.Add(expiry).UnixNano())/1e9)), 0)
	if expiry < distributionLeeway {
		exp = exp.Add(-distributionLeeway)
	}
	header := map[string]any{
		"typ": "JWT",
		"alg": "ES256",
		"x5c": []string{base64.StdEncoding.EncodeToString(ts.certDER)},
	}
	claims := map[string]any{
		"iss":    ts.Issuer,
		"sub":    subject,
		"aud":    ts.Service,
		"exp":    exp.Unix(),
		"nbf":    now.Add(-time.Second).Unix(),
		"iat":    now.Unix(),
		"jti":    fmt.Sprintf("regfs-%d-%d", now.UnixNano(), serial),
		"access": access,
	}
	hb, err := json.Marshal(header)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	cb, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	enc := base64.RawURLEncoding
	signingInput := enc.EncodeToString(hb) + "." + enc.EncodeToString(cb)
	digest := sha256.Sum256([]byte(signingInput))
	r, s, err := ecdsa.Sign(rand.Reader, ts.key, digest[:])
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return signingInput + "." + enc.EncodeToString(sig), nil
}

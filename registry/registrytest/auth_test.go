package registrytest

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func getStatus(t *testing.T, method, u string, header http.Header) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s: %v", u, err)
	}
	return resp.StatusCode, resp.Header, body
}

func basicHeader(user, pass string) http.Header {
	req, _ := http.NewRequest("GET", "http://x/", nil)
	req.SetBasicAuth(user, pass)
	return req.Header
}

func TestHtpasswdAuth(t *testing.T) {
	reg := StartRegistry(t, WithHtpasswd("alice", "s3cret"))
	tests := []struct {
		name   string
		header http.Header
		want   int
	}{
		{"no credentials", nil, http.StatusUnauthorized},
		{"wrong password", basicHeader("alice", "wrong"), http.StatusUnauthorized},
		{"unknown user", basicHeader("bob", "s3cret"), http.StatusUnauthorized},
		{"right password", basicHeader("alice", "s3cret"), http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, h, _ := getStatus(t, "GET", reg.URL+"/v2/", tt.header)
			if got != tt.want {
				t.Fatalf("GET /v2/: got %d, want %d", got, tt.want)
			}
			if got == http.StatusUnauthorized && !strings.HasPrefix(h.Get("WWW-Authenticate"), "Basic ") {
				t.Errorf("challenge: got %q, want Basic", h.Get("WWW-Authenticate"))
			}
		})
	}
	if reg.Credentials == nil || reg.Credentials.User != "alice" {
		t.Errorf("Credentials: got %+v, want alice", reg.Credentials)
	}
}

// fetchToken asks the token server for a token with scope.
func fetchToken(t *testing.T, reg *Registry, scope string, header http.Header) (int, string) {
	t.Helper()
	u := reg.Token.Realm + "?service=" + url.QueryEscape(reg.Token.Service)
	if scope != "" {
		u += "&scope=" + url.QueryEscape(scope)
	}
	status, _, body := getStatus(t, "GET", u, header)
	if status != http.StatusOK {
		return status, ""
	}
	var tr tokenResponse
	if err := json.Unmarshal(body, &tr); err != nil {
		t.Fatalf("token body %q: %v", body, err)
	}
	return status, tr.Token
}

func bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

func TestTokenAuth(t *testing.T) {
	reg := StartRegistry(t, WithTokenAuth("alice", "s3cret"))
	status, h, _ := getStatus(t, "GET", reg.URL+"/v2/", nil)
	if status != http.StatusUnauthorized {
		t.Fatalf("anonymous GET /v2/: got %d, want 401", status)
	}
	challenge := h.Get("WWW-Authenticate")
	if !strings.HasPrefix(challenge, "Bearer ") || !strings.Contains(challenge, reg.Token.Realm) || !strings.Contains(challenge, reg.Token.Service) {
		t.Fatalf("challenge: got %q, want Bearer with realm %s", challenge, reg.Token.Realm)
	}

	tests := []struct {
		name       string
		header     http.Header
		wantStatus int
	}{
		{"no credentials", nil, http.StatusUnauthorized},
		{"wrong password", basicHeader("alice", "wrong"), http.StatusUnauthorized},
		{"right password", basicHeader("alice", "s3cret"), http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, tok := fetchToken(t, reg, "registry:catalog:*", tt.header)
			if got != tt.wantStatus {
				t.Fatalf("token request: got %d, want %d", got, tt.wantStatus)
			}
			if got != http.StatusOK {
				return
			}
			for _, path := range []string{"/v2/", "/v2/_catalog"} {
				if s, _, body := getStatus(t, "GET", reg.URL+path, bearer(tok)); s != http.StatusOK {
					t.Errorf("GET %s with token: got %d, want 200 (%s)", path, s, body)
				}
			}
		})
	}
	if s, _, _ := getStatus(t, "GET", reg.URL+"/v2/", bearer("not.a.token")); s != http.StatusUnauthorized {
		t.Errorf("GET /v2/ with garbage token: got %d, want 401", s)
	}
	if got, want := reg.Token.RequestCount(), 3; got != want {
		t.Errorf("token requests: got %d, want %d", got, want)
	}
	if got, want := reg.Token.IssuedCount(), 1; got != want {
		t.Errorf("tokens issued: got %d, want %d", got, want)
	}
}

func TestTokenAuthScopes(t *testing.T) {
	reg := StartRegistry(t, WithTokenAuth("alice", "s3cret", WithAnonymousPull()))
	// A token without catalog access is refused on the catalog.
	_, anon := fetchToken(t, reg, "registry:catalog:*", nil)
	if anon == "" {
		t.Fatal("anonymous token: got none, want one (anonymous pull is on)")
	}
	if s, _, _ := getStatus(t, "GET", reg.URL+"/v2/_catalog", bearer(anon)); s != http.StatusUnauthorized {
		t.Errorf("anonymous catalog: got %d, want 401", s)
	}
	// Anonymous pull of a missing repo passes auth and reaches the 404.
	_, pull := fetchToken(t, reg, "repository:no/such:pull", nil)
	if s, _, _ := getStatus(t, "GET", reg.URL+"/v2/no/such/tags/list", bearer(pull)); s != http.StatusNotFound {
		t.Errorf("anonymous pull token on tags/list: got %d, want 404", s)
	}
	// Push is never granted anonymously.
	_, push := fetchToken(t, reg, "repository:no/such:pull,push", nil)
	if s, _, _ := getStatus(t, "POST", reg.URL+"/v2/no/such/blobs/uploads/", bearer(push)); s != http.StatusUnauthorized {
		t.Errorf("anonymous push: got %d, want 401", s)
	}
	_, authed := fetchToken(t, reg, "repository:no/such:pull,push", basicHeader("alice", "s3cret"))
	if s, _, _ := getStatus(t, "POST", reg.URL+"/v2/no/such/blobs/uploads/", bearer(authed)); s != http.StatusAccepted {
		t.Errorf("authenticated push: got %d, want 202", s)
	}
}

func TestTokenExpiry(t *testing.T) {
	reg := StartRegistry(t, WithTokenAuth("alice", "s3cret", WithTokenExpiry(time.Millisecond)))
	_, tok := fetchToken(t, reg, "", basicHeader("alice", "s3cret"))
	// The token lapses at the next whole second at the latest.
	deadline := time.Now().Add(3 * time.Second)
	for {
		s, _, _ := getStatus(t, "GET", reg.URL+"/v2/", bearer(tok))
		if s == http.StatusUnauthorized {
			break
		}
		if s != http.StatusOK {
			t.Fatalf("GET /v2/: got %d, want 200 or 401", s)
		}
		if time.Now().After(deadline) {
			t.Fatal("token still accepted 3 s after a 1 ms expiry")
		}
		time.Sleep(50 * time.Millisecond)
	}
	reg.Token.SetExpiry(time.Hour)
	_, tok = fetchToken(t, reg, "", basicHeader("alice", "s3cret"))
	if s, _, _ := getStatus(t, "GET", reg.URL+"/v2/", bearer(tok)); s != http.StatusOK {
		t.Errorf("fresh token: got %d, want 200", s)
	}
}

func TestTokenServerPOST(t *testing.T) {
	reg := StartRegistry(t, WithTokenAuth("alice", "s3cret"))
	post := func(form url.Values) (int, tokenResponse) {
		resp, err := http.PostForm(reg.Token.Realm, form)
		if err != nil {
			t.Fatalf("POST token: %v", err)
		}
		defer resp.Body.Close()
		var tr tokenResponse
		_ = json.NewDecoder(resp.Body).Decode(&tr)
		return resp.StatusCode, tr
	}
	base := url.Values{"service": {reg.Token.Service}, "scope": {"repository:a/b:pull"}, "client_id": {"test"}}
	withPass := func(grant, k, v string) url.Values {
		f := url.Values{}
		for key, vals := range base {
			f[key] = vals
		}
		f.Set("grant_type", grant)
		f.Set("username", "alice")
		f.Set(k, v)
		return f
	}
	if s, _ := post(withPass("password", "password", "wrong")); s != http.StatusUnauthorized {
		t.Errorf("POST wrong password: got %d, want 401", s)
	}
	s, tr := post(withPass("password", "password", "s3cret"))
	if s != http.StatusOK || tr.RefreshToken == "" || tr.AccessToken == "" {
		t.Fatalf("POST password: got %d %+v, want 200 with tokens", s, tr)
	}
	if s, _ := post(withPass("refresh_token", "refresh_token", tr.RefreshToken)); s != http.StatusOK {
		t.Errorf("POST refresh_token: got %d, want 200", s)
	}
	if s, _ := post(withPass("refresh_token", "refresh_token", "bogus")); s != http.StatusUnauthorized {
		t.Errorf("POST bogus refresh_token: got %d, want 401", s)
	}
	if s, _ := post(url.Values{"service": {"other"}, "grant_type": {"password"}}); s != http.StatusBadRequest {
		t.Errorf("POST wrong service: got %d, want 400", s)
	}
}

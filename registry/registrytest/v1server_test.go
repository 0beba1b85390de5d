package registrytest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/regfs/regfs/tarsum"
)

// v1TestTar is a small gzip layer with one file of the given content.
func v1TestTar(t testing.TB, name, content string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write([]byte(content)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// v1Fixture starts a server holding library/busybox:latest (2 layers) and
// team/app:1.0 (3 layers, sharing busybox's base).
func v1Fixture(t *testing.T, opts ...V1Option) (*V1Server, []*V1Image, []*V1Image) {
	t.Helper()
	s := StartV1Server(t, opts...)
	base := V1LayerSpec{Tar: v1TestTar(t, "bin/sh", "shell")}
	bb, err := s.AddImage("busybox", "latest", base, V1LayerSpec{Tar: v1TestTar(t, "etc/motd", "hello")})
	if err != nil {
		t.Fatal(err)
	}
	app, err := s.AddImage("team/app", "1.0", base, V1LayerSpec{Tar: v1TestTar(t, "app/a", "a")}, V1LayerSpec{Tar: v1TestTar(t, "app/b", strings.Repeat("b", 5000))})
	if err != nil {
		t.Fatal(err)
	}
	s.SetDescription("team/app", "The App")
	return s, bb, app
}

type v1Call struct {
	path   string
	header map[string]string
}

func v1Do(t *testing.T, s *V1Server, c v1Call) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.URL+c.path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range c.header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatalf("GET %s: %v", c.path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read: %v", c.path, err)
	}
	return resp, b
}

// v1Token does the index handshake for repo and returns the Authorization
// value and the session cookie.
func v1Token(t *testing.T, s *V1Server, repo string) (string, *http.Cookie) {
	t.Helper()
	resp, _ := v1Do(t, s, v1Call{path: "/v1/repositories/" + repo + "/images", header: map[string]string{"X-Docker-Token": "true"}})
	if resp.StatusCode != 200 {
		t.Fatalf("handshake %s: got %d want 200", repo, resp.StatusCode)
	}
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == V1SessionCookie {
			cookie = c
		}
	}
	return "Token " + resp.Header.Get("X-Docker-Token"), cookie
}

func TestV1ServerRoutes(t *testing.T) {
	s, bb, app := v1Fixture(t)
	top := bb[1]
	tests := []struct {
		name       string
		call       v1Call
		wantStatus int
		wantHeader map[string]string
		wantBody   string // exact, when set
		check      func(t *testing.T, body []byte)
	}{
		{name: "ping", call: v1Call{path: "/v1/_ping"}, wantStatus: 200,
			wantHeader: map[string]string{"X-Docker-Registry-Version": V1RegistryVersion, "X-Docker-Registry-Standalone": "true"}, wantBody: "true"},
		{name: "tags library default", call: v1Call{path: "/v1/repositories/busybox/tags"}, wantStatus: 200,
			wantBody: fmt.Sprintf(`{"latest":%q}`, top.ID)},
		{name: "tags full name", call: v1Call{path: "/v1/repositories/library/busybox/tags"}, wantStatus: 200,
			wantBody: fmt.Sprintf(`{"latest":%q}`, top.ID)},
		{name: "one tag", call: v1Call{path: "/v1/repositories/team/app/tags/1.0"}, wantStatus: 200,
			wantBody: fmt.Sprintf("%q", app[2].ID)},
		{name: "unknown repo tags", call: v1Call{path: "/v1/repositories/team/nope/tags"}, wantStatus: 404},
		{name: "unknown tag", call: v1Call{path: "/v1/repositories/team/app/tags/2.0"}, wantStatus: 404},
		{name: "unknown repo images", call: v1Call{path: "/v1/repositories/team/nope/images"}, wantStatus: 404},
		{name: "json", call: v1Call{path: "/v1/images/" + top.ID + "/json"}, wantStatus: 200,
			wantHeader: map[string]string{"X-Docker-Size": fmt.Sprint(len(top.Layer)), "X-Docker-Payload-Checksum": top.PayloadChecksum},
			wantBody:   string(top.JSON)},
		{name: "ancestry top first", call: v1Call{path: "/v1/images/" + app[2].ID + "/ancestry"}, wantStatus: 200,
			wantBody: fmt.Sprintf(`[%q,%q,%q]`, app[2].ID, app[1].ID, app[0].ID)},
		{name: "unknown image json", call: v1Call{path: "/v1/images/" + strings.Repeat("0", 64) + "/json"}, wantStatus: 404},
		{name: "unknown image layer", call: v1Call{path: "/v1/images/" + strings.Repeat("0", 64) + "/layer"}, wantStatus: 404},
		{name: "unknown route", call: v1Call{path: "/v1/nothing"}, wantStatus: 404},
		{name: "images list", call: v1Call{path: "/v1/repositories/team/app/images"}, wantStatus: 200,
			check: func(t *testing.T, body []byte) {
				var list []struct{ ID, Checksum string }
				if err := json.Unmarshal(body, &list); err != nil {
					t.Fatal(err)
				}
				if len(list) != 3 {
					t.Errorf("got %d images, want 3", len(list))
				}
			}},
		{name: "images without token request", call: v1Call{path: "/v1/repositories/team/app/images"}, wantStatus: 200,
			wantHeader: map[string]string{"X-Docker-Token": "", "X-Docker-Endpoints": ""}},
		{name: "images with token request", call: v1Call{path: "/v1/repositories/team/app/images", header: map[string]string{"X-Docker-Token": "true"}}, wantStatus: 200,
			wantHeader: map[string]string{"X-Docker-Endpoints": s.Host},
			check: func(t *testing.T, body []byte) {
				// header checked through the log below
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := v1Do(t, s, tt.call)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("got status %d, want %d (body %s)", resp.StatusCode, tt.wantStatus, body)
			}
			for k, v := range tt.wantHeader {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("header %s: got %q, want %q", k, got, v)
				}
			}
			if tt.wantBody != "" && string(body) != tt.wantBody {
				t.Errorf("body: got %s, want %s", body, tt.wantBody)
			}
			if tt.check != nil {
				tt.check(t, body)
			}
		})
	}
	if got := s.Count("images"); got != 4 {
		t.Errorf("Count(images): got %d, want 4", got)
	}
}

func TestV1ServerHandshake(t *testing.T) {
	s, _, _ := v1Fixture(t, V1WithTokenChecks(), V1WithListeners(2))
	resp, _ := v1Do(t, s, v1Call{path: "/v1/repositories/team/app/images", header: map[string]string{"X-Docker-Token": "true"}})
	tok := resp.Header.Get("X-Docker-Token")
	if !strings.HasPrefix(tok, "signature=") || !strings.HasSuffix(tok, `,repository="team/app",access=read`) {
		t.Errorf("X-Docker-Token: got %q, want signature=…,repository=\"team/app\",access=read", tok)
	}
	if got, want := resp.Header.Get("X-Docker-Endpoints"), s.Hosts[0]+", "+s.Hosts[1]; got != want {
		t.Errorf("X-Docker-Endpoints: got %q, want %q", got, want)
	}
	if len(resp.Cookies()) != 1 || resp.Cookies()[0].Name != V1SessionCookie {
		t.Errorf("cookies: got %v, want one %q", resp.Cookies(), V1SessionCookie)
	}
	if got := resp.Header.Get("X-Docker-Registry-Version"); got != V1RegistryVersion {
		t.Errorf("version: got %q", got)
	}
	ping, _ := v1Do(t, s, v1Call{path: "/v1/_ping"})
	if got := ping.Header.Get("X-Docker-Registry-Standalone"); got != "false" {
		t.Errorf("standalone with token checks: got %q, want false", got)
	}
}

func TestV1ServerTokenChecks(t *testing.T) {
	s, bb, app := v1Fixture(t, V1WithTokenChecks())
	appTok, _ := v1Token(t, s, "team/app")
	bbTok, _ := v1Token(t, s, "busybox")
	forged := `Token signature=deadbeef,repository="team/app",access=read`
	tests := []struct {
		name, path, auth string
		want             int
	}{
		{"no token tags", "/v1/repositories/team/app/tags", "", 401},
		{"forged token", "/v1/repositories/team/app/tags", forged, 401},
		{"basic instead of token", "/v1/repositories/team/app/tags", "Basic dTpw", 401},
		{"token of other repo", "/v1/repositories/team/app/tags", bbTok, 401},
		{"token", "/v1/repositories/team/app/tags", appTok, 200},
		{"token one tag", "/v1/repositories/team/app/tags/1.0", appTok, 200},
		{"token unknown tag", "/v1/repositories/team/app/tags/9", appTok, 404},
		{"image of repo", "/v1/images/" + app[2].ID + "/json", appTok, 200},
		{"shared base via other repo", "/v1/images/" + app[0].ID + "/layer", bbTok, 200},
		{"image not in token's repo", "/v1/images/" + app[2].ID + "/json", bbTok, 401},
		{"image without token", "/v1/images/" + bb[1].ID + "/ancestry", "", 401},
		{"unknown image with token", "/v1/images/" + strings.Repeat("a", 64) + "/json", appTok, 404},
		{"unknown image without token", "/v1/images/" + strings.Repeat("a", 64) + "/json", "", 401},
		{"ping needs no token", "/v1/_ping", "", 200},
		{"search needs no token", "/v1/search?q=", "", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := map[string]string{}
			if tt.auth != "" {
				h["Authorization"] = tt.auth
			}
			resp, body := v1Do(t, s, v1Call{path: tt.path, header: h})
			if resp.StatusCode != tt.want {
				t.Errorf("got %d, want %d (%s)", resp.StatusCode, tt.want, body)
			}
			if resp.StatusCode == 401 && resp.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("401 without WWW-Authenticate")
			}
		})
	}
	s.ExpireTokens()
	if resp, _ := v1Do(t, s, v1Call{path: "/v1/repositories/team/app/tags", header: map[string]string{"Authorization": appTok}}); resp.StatusCode != 401 {
		t.Errorf("expired token: got %d, want 401", resp.StatusCode)
	}
}

func TestV1ServerBasicAndCookie(t *testing.T) {
	s, _, _ := v1Fixture(t, V1WithBasicAuth("alice", "secret"), V1WithCookieRequired())
	basic := func(u, p string) string {
		req, _ := http.NewRequest("GET", "/", nil)
		req.SetBasicAuth(u, p)
		return req.Header.Get("Authorization")
	}
	for _, tt := range []struct {
		name, auth string
		want       int
	}{
		{"no credentials", "", 401},
		{"wrong password", basic("alice", "nope"), 401},
		{"wrong user", basic("bob", "secret"), 401},
		{"right", basic("alice", "secret"), 200},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := map[string]string{"X-Docker-Token": "true"}
			if tt.auth != "" {
				h["Authorization"] = tt.auth
			}
			resp, _ := v1Do(t, s, v1Call{path: "/v1/repositories/team/app/images", header: h})
			if resp.StatusCode != tt.want {
				t.Fatalf("got %d, want %d", resp.StatusCode, tt.want)
			}
			if tt.want == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic ") {
				t.Errorf("WWW-Authenticate: got %q, want Basic …", resp.Header.Get("WWW-Authenticate"))
			}
		})
	}
	resp, _ := v1Do(t, s, v1Call{path: "/v1/repositories/team/app/images", header: map[string]string{"X-Docker-Token": "true", "Authorization": basic("alice", "secret")}})
	tok := "Token " + resp.Header.Get("X-Docker-Token")
	cookie := resp.Cookies()[0]
	for _, tt := range []struct {
		name   string
		header map[string]string
		want   int
	}{
		{"token without cookie", map[string]string{"Authorization": tok}, 401},
		{"cookie without token", map[string]string{"Cookie": cookie.String()}, 401},
		{"cookie and basic", map[string]string{"Cookie": cookie.String(), "Authorization": basic("alice", "secret")}, 200},
		{"cookie and token", map[string]string{"Cookie": cookie.String(), "Authorization": tok}, 200},
		{"bad cookie and token", map[string]string{"Cookie": V1SessionCookie + "=forged", "Authorization": tok}, 401},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, _ := v1Do(t, s, v1Call{path: "/v1/repositories/team/app/tags", header: tt.header})
			if resp.StatusCode != tt.want {
				t.Errorf("got %d, want %d", resp.StatusCode, tt.want)
			}
		})
	}
}

func TestV1ServerLayerRanges(t *testing.T) {
	s, _, app := v1Fixture(t)
	img := app[2]
	size := int64(len(img.Layer))
	path := "/v1/images/" + img.ID + "/layer"
	tests := []struct {
		rng          string
		want         int
		wantCR       string
		lo, hi       int64 // expected body = Layer[lo:hi]
		wantNoAccept bool
	}{
		{"", 200, "", 0, size, false},
		{"bytes=0-9", 206, fmt.Sprintf("bytes 0-9/%d", size), 0, 10, false},
		{"bytes=10-", 206, fmt.Sprintf("bytes 10-%d/%d", size-1, size), 10, size, false},
		{"bytes=-5", 206, fmt.Sprintf("bytes %d-%d/%d", size-5, size-1, size), size - 5, size, false},
		{fmt.Sprintf("bytes=5-%d", size+100), 206, fmt.Sprintf("bytes 5-%d/%d", size-1, size), 5, size, false},
		{fmt.Sprintf("bytes=%d-", size), 416, fmt.Sprintf("bytes */%d", size), 0, 0, false},
		{fmt.Sprintf("bytes=%d-%d", size+5, size+10), 416, fmt.Sprintf("bytes */%d", size), 0, 0, false},
		{"bytes=9-3", 200, "", 0, size, false},     // malformed: ignored
		{"bytes=0-1,4-5", 200, "", 0, size, false}, // multi-range: ignored
		{"items=0-1", 200, "", 0, size, false},
	}
	for _, tt := range tests {
		t.Run(tt.rng, func(t *testing.T) {
			h := map[string]string{}
			if tt.rng != "" {
				h["Range"] = tt.rng
			}
			resp, body := v1Do(t, s, v1Call{path: path, header: h})
			if resp.StatusCode != tt.want {
				t.Fatalf("got %d, want %d", resp.StatusCode, tt.want)
			}
			if got := resp.Header.Get("Content-Range"); got != tt.wantCR {
				t.Errorf("Content-Range: got %q, want %q", got, tt.wantCR)
			}
			if got := resp.Header.Get("Accept-Ranges"); got != "bytes" {
				t.Errorf("Accept-Ranges: got %q, want bytes", got)
			}
			if tt.want != 416 && !bytes.Equal(body, img.Layer[tt.lo:tt.hi]) {
				t.Errorf("body: got %d bytes, want Layer[%d:%d]", len(body), tt.lo, tt.hi)
			}
		})
	}

	s2, _, app2 := v1Fixture(t, V1WithoutRanges())
	resp, body := v1Do(t, s2, v1Call{path: "/v1/images/" + app2[2].ID + "/layer", header: map[string]string{"Range": "bytes=10-20"}})
	if resp.StatusCode != 200 || resp.Header.Get("Accept-Ranges") != "" || !bytes.Equal(body, app2[2].Layer) {
		t.Errorf("without ranges: got %d, Accept-Ranges %q, %d bytes; want 200, none, the whole %d", resp.StatusCode, resp.Header.Get("Accept-Ranges"), len(body), len(app2[2].Layer))
	}
}

func TestV1ServerFaults(t *testing.T) {
	s, _, app := v1Fixture(t)
	img := app[2]
	s.InjectFault(V1Fault{Path: "/v1/images/", Status: 503, RetryAfter: "2", Times: 2})
	for i, want := range []int{503, 503, 200} {
		resp, _ := v1Do(t, s, v1Call{path: "/v1/images/" + img.ID + "/json"})
		if resp.StatusCode != want {
			t.Errorf("request %d: got %d, want %d", i, resp.StatusCode, want)
		}
		if want == 503 && resp.Header.Get("Retry-After") != "2" {
			t.Errorf("request %d: Retry-After %q, want 2", i, resp.Header.Get("Retry-After"))
		}
	}
	s.InjectFault(V1Fault{CutAfter: 100, Times: 1})
	resp, err := http.Get(s.URL + "/v1/images/" + img.ID + "/layer")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil || len(b) != 100 {
		t.Errorf("cut body: got %d bytes, err %v; want 100 bytes and an error", len(b), err)
	}
	resp, err = http.Get(s.URL + "/v1/images/" + img.ID + "/layer")
	if err != nil {
		t.Fatal(err)
	}
	b, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !bytes.Equal(b, img.Layer) {
		t.Errorf("after the cut: got %d bytes, err %v; want the whole layer", len(b), err)
	}
	if got := s.Count("layer"); got != 2 {
		t.Errorf("Count(layer): got %d, want 2", got)
	}
	if resp, _ := v1Do(t, s, v1Call{path: "/v1/images/" + img.ID + "/layer"}); resp.StatusCode != 200 {
		t.Errorf("status after fault: %d", resp.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodPut, s.URL+"/v1/images/"+img.ID+"/json", nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 {
		t.Errorf("PUT: got %d, want 405", resp.StatusCode)
	}
}

func TestV1ServerSearch(t *testing.T) {
	s, _, _ := v1Fixture(t)
	for i := 0; i < 5; i++ {
		s.SetDescription(fmt.Sprintf("many/r%d", i), "filler")
	}
	tests := []struct {
		query     string
		want      int // status
		wantNames []string
		wantTotal int
		wantPages int
	}{
		{"q=", 200, []string{"library/busybox", "many/r0", "many/r1", "many/r2", "many/r3", "many/r4", "team/app"}, 7, 1},
		{"q=app", 200, []string{"team/app"}, 1, 1},
		{"q=THE+APP", 200, []string{"team/app"}, 1, 1}, // description, case-insensitive
		{"q=none", 200, []string{}, 0, 0},
		{"q=&n=3&page=2", 200, []string{"many/r2", "many/r3", "many/r4"}, 7, 3},
		{"q=&n=3&page=3", 200, []string{"team/app"}, 7, 3},
		{"q=&n=3&page=9", 200, []string{}, 7, 3},
		{"q=&n=0", 400, nil, 0, 0},
		{"q=&n=101", 400, nil, 0, 0},
		{"q=&page=0", 400, nil, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			resp, body := v1Do(t, s, v1Call{path: "/v1/search?" + tt.query})
			if resp.StatusCode != tt.want {
				t.Fatalf("got %d, want %d", resp.StatusCode, tt.want)
			}
			if tt.want != 200 {
				return
			}
			var r V1SearchResponse
			if err := json.Unmarshal(body, &r); err != nil {
				t.Fatal(err)
			}
			names := []string{}
			for _, x := range r.Results {
				names = append(names, x.Name)
			}
			if fmt.Sprint(names) != fmt.Sprint(tt.wantNames) || r.NumResults != tt.wantTotal || r.NumPages != tt.wantPages {
				t.Errorf("got %v total %d pages %d, want %v total %d pages %d", names, r.NumResults, r.NumPages, tt.wantNames, tt.wantTotal, tt.wantPages)
			}
		})
	}
	s2 := StartV1Server(t, V1WithoutSearch())
	if resp, _ := v1Do(t, s2, v1Call{path: "/v1/search?q="}); resp.StatusCode != 404 {
		t.Errorf("without search: got %d, want 404", resp.StatusCode)
	}
}

func TestV1ServerAddImage(t *testing.T) {
	s := StartV1Server(t)
	a := v1TestTar(t, "a", "a")
	b := v1TestTar(t, "b", "b")
	one, err := s.AddImage("x/one", "t", V1LayerSpec{Tar: a}, V1LayerSpec{Tar: b})
	if err != nil {
		t.Fatal(err)
	}
	two, err := s.AddImage("x/two", "t", V1LayerSpec{Tar: b})
	if err != nil {
		t.Fatal(err)
	}
	if one[0].ID == one[1].ID || one[1].ID == two[0].ID {
		t.Errorf("IDs must differ by parent: %s %s %s", one[0].ID, one[1].ID, two[0].ID)
	}
	if one[1].ID != V1ImageID(one[0].ID, b) || one[1].Parent != one[0].ID {
		t.Errorf("ID/parent chain broken")
	}
	var js map[string]any
	if err := json.Unmarshal(one[1].JSON, &js); err != nil {
		t.Fatal(err)
	}
	if js["id"] != one[1].ID || js["parent"] != one[0].ID {
		t.Errorf("JSON: got id %v parent %v", js["id"], js["parent"])
	}
	for _, img := range append(one, two...) {
		if !strings.HasPrefix(img.Checksum, "tarsum+sha256:") {
			t.Errorf("checksum %q: want tarsum+sha256:…", img.Checksum)
		}
		if err := tarsum.Verify(context.Background(), bytes.NewReader(img.Layer), img.Checksum, img.JSON); err != nil {
			t.Errorf("checksum of %s: %v", img.ID, err)
		}
		if err := tarsum.Verify(context.Background(), bytes.NewReader(img.Layer), img.Checksum, nil); err == nil {
			t.Errorf("checksum of %s does not cover the JSON", img.ID)
		}
	}
	if err := s.Tag("x/two", "alias", one[1].ID); err != nil {
		t.Fatal(err)
	}
	if err := s.Tag("x/two", "bad", strings.Repeat("f", 64)); err == nil {
		t.Errorf("Tag of unknown image: got nil error")
	}
	if _, err := s.AddImage("x/three", "t"); err == nil {
		t.Errorf("AddImage without layers: got nil error")
	}
	if _, err := s.AddImage("x/three", "t", V1LayerSpec{Tar: []byte{0x1f, 0x8b, 1, 2}}); err == nil {
		t.Errorf("AddImage with broken gzip: got nil error")
	}
}

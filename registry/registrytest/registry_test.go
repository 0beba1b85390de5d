package registrytest

import (
	"io"
	"net/http"
	"testing"
)

func TestStartRegistryPing(t *testing.T) {
	reg := StartRegistry(t)
	resp, err := http.Get(reg.URL + "/v2/")
	if err != nil {
		t.Fatalf("GET /v2/: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v2/: got status %d, want 200 (body %q)", resp.StatusCode, body)
	}
	if got, want := resp.Header.Get("Docker-Distribution-API-Version"), "registry/2.0"; got != want {
		t.Errorf("API version header: got %q, want %q", got, want)
	}
	st := reg.Stats()
	if st.Requests != 1 || st.ByMethod["GET"] != 1 || st.ByPath["/v2/"] != 1 {
		t.Errorf("stats: got %v, want 1 GET of /v2/", st)
	}
	if st.BytesServed != int64(len(body)) {
		t.Errorf("bytes served: got %d, want %d", st.BytesServed, len(body))
	}
	resp, err = http.Get(reg.URL + "/v2/_catalog")
	if err != nil {
		t.Fatalf("GET catalog: %v", err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v2/_catalog: got status %d, want 200 (body %q)", resp.StatusCode, body)
	}
}

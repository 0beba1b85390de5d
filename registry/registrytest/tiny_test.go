package registrytest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
)

func TestPushTinyRepos(t *testing.T) {
	reg := StartRegistry(t, WithInMemoryStorage())
	var repos []string
	for i := range 50 {
		repos = append(repos, fmt.Sprintf("tiny/r%02d", i))
	}
	if err := PushTinyRepos(context.Background(), NewPusher(reg), repos, []string{"a", "b"}, 8); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(reg.URL + "/v2/_catalog")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ Repositories []string }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || len(body.Repositories) != len(repos) {
		t.Errorf("catalog: got %d repositories (%v), want %d", len(body.Repositories), err, len(repos))
	}
	req, _ := http.NewRequest(http.MethodGet, reg.URL+"/v2/tiny/r42/manifests/b", nil)
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET tiny/r42:b: %v", resp.Status)
	}
}

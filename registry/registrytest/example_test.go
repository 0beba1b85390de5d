package registrytest_test

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/regfs/regfs/registry/registrytest"
)

// Outside a test (a benchmark program, a demo): start a registry, push the
// fixtures, put a misbehaving proxy in front, and see what got through.
// In tests, StartRegistry, PushFixtures and StartFaultProxy do the same and
// clean up by themselves.
func Example() {
	ctx := context.Background()
	reg, err := registrytest.Start(ctx, registrytest.Config{InMemory: true})
	if err != nil {
		panic(err)
	}
	defer reg.Close()
	f, err := registrytest.PushFixturesTo(ctx, registrytest.NewPusher(reg), reg.Host, registrytest.WithoutLarge())
	if err != nil {
		panic(err)
	}
	proxy, err := registrytest.NewFaultProxy(reg.URL)
	if err != nil {
		panic(err)
	}
	defer proxy.Close()
	proxy.FailStatus(http.StatusServiceUnavailable, "1", 1, registrytest.ManifestRequests)

	get := func() int {
		req, _ := http.NewRequest(http.MethodGet, proxy.URL+"/v2/"+registrytest.RepoSmall+"/manifests/latest", nil)
		req.Header.Set("Accept", f.Small.MediaType)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			panic(err)
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode
	}
	fmt.Println(get(), get(), len(f.Tags(registrytest.RepoPaging)))
	// Output: 503 200 25
}

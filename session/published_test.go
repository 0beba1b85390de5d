package session

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/regfs/regfs/layerindex"
	"github.com/regfs/regfs/registry"
)

// countingArtifacts answers Referrers with refs (or err) and counts the calls.
type countingArtifacts struct {
	registry.Artifacts
	mu    sync.Mutex
	calls int
	refs  []ocispec.Descriptor
	err   error
}

func (a *countingArtifacts) Referrers(context.Context, string, digest.Digest, string) ([]ocispec.Descriptor, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls++
	return a.refs, a.err
}

// An image's referrers answer, none or a failure alike, is asked once per
// TTL whatever the number of its layers that ask, then asked again.
func TestPublishedLookupKeptForTTL(t *testing.T) {
	ctx := context.Background()
	subject := digest.FromString("image")
	for _, tc := range []struct {
		name string
		err  error
	}{{"none published", nil}, {"registry failing", errors.New("503")}} {
		t.Run(tc.name, func(t *testing.T) {
			a := &countingArtifacts{refs: []ocispec.Descriptor{}, err: tc.err}
			now := time.Unix(1000, 0)
			p := &publishedLookup{client: a, ttl: 30 * time.Second, now: func() time.Time { return now }, images: map[string]*publishedImage{}}
			for i := 0; i < 5; i++ {
				r, err := p.indexOf(ctx, "repo", subject, digest.FromString("layer"+string(rune('a'+i))))
				if r != nil || !errors.Is(err, tc.err) && tc.err != nil || tc.err == nil && err != nil {
					t.Fatalf("layer %d: got %v, %v; want none, %v", i, r, err, tc.err)
				}
			}
			if a.calls != 1 {
				t.Fatalf("referrers asked %d times for 5 layers, want once", a.calls)
			}
			now = now.Add(31 * time.Second)
			p.indexOf(ctx, "repo", subject, digest.FromString("layer"))
			if a.calls != 2 {
				t.Fatalf("referrers asked %d times after the TTL, want twice", a.calls)
			}
		})
	}
}

// An artifact is used only if it is ours, made for this subject, with
// blobs of the index format this build reads.
func TestParseIndexArtifact(t *testing.T) {
	subject, layer := digest.FromString("image"), digest.FromString("layer")
	version := strconv.Itoa(layerindex.PersistVersion)
	blob := ocispec.Descriptor{MediaType: IndexBlobMediaType, Digest: digest.FromString("index"), Size: 10,
		Annotations: map[string]string{AnnotationLayerDigest: layer.String(), AnnotationIndexFormat: version}}
	good := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"` + IndexArtifactType + `",` +
		`"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},` +
		`"layers":[{"mediaType":"` + blob.MediaType + `","digest":"` + blob.Digest.String() + `","size":10,"annotations":{"` +
		AnnotationLayerDigest + `":"` + layer.String() + `","` + AnnotationIndexFormat + `":"%s"}}],` +
		`"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":1}}`
	for _, tc := range []struct {
		name, version string
		subject       digest.Digest
		ok            bool
	}{
		{"ours", version, subject, true},
		{"another subject", version, digest.FromString("other"), false},
		{"another format version", strconv.Itoa(layerindex.PersistVersion - 1), subject, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := []byte(fmt.Sprintf(good, tc.version, tc.subject))
			blobs, err := parseIndexArtifact(raw, subject)
			if (err == nil) != tc.ok {
				t.Fatalf("got %v, %v; want ok %v", blobs, err, tc.ok)
			}
			if tc.ok && blobs[layer].Digest != blob.Digest {
				t.Fatalf("blob of layer %s: got %v, want %s", layer, blobs[layer], blob.Digest)
			}
		})
	}
}

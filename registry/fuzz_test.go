package registry

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// The fuzz targets run their seeds in go test; run one for longer with
// go test -run XXX -fuzz FuzzName -fuzztime 45s ./registry.

// FuzzParseReference: any string parses or fails with a ReferenceError;
// a parsed reference prints as a string that parses back to itself.
func FuzzParseReference(f *testing.F) {
	for _, s := range []string{
		"alpine", "alpine:3.19", "library/alpine@sha256:" + strings.Repeat("a", 64), "127.0.0.1:5000/test/small:latest",
		"localhost/x", "[::1]:5000/a/b:c", "Registry.Example.COM/x/y", "http://host:5000", "a//b", "a:", "@", "docker.io/x",
		"index.docker.io/library/busybox:1", "a/b:" + strings.Repeat("t", 129), "a__b/c--d.e:tag@sha256:" + strings.Repeat("0", 64),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, def := range []string{DockerHub, "", "registry.local:5000"} {
			ref, err := ParseReference(s, def)
			if err != nil {
				var re *ReferenceError
				if !errors.As(err, &re) {
					t.Fatalf("ParseReference(%q): error %T is not a ReferenceError", s, err)
				}
				continue
			}
			if ref.Registry == "" || ref.Repository == "" {
				t.Fatalf("ParseReference(%q): %+v: empty registry or repository", s, ref)
			}
			back, err := ParseReference(ref.String(), "")
			if err != nil || back != ref {
				t.Fatalf("ParseReference(%q) = %+v, prints %q, which parses to %+v, %v", s, ref, ref.String(), back, err)
			}
			for _, part := range strings.Split(ref.Repository, "/") {
				if part == "" || part == "." || part == ".." {
					t.Fatalf("ParseReference(%q): repository %q has path component %q", s, ref.Repository, part)
				}
			}
		}
	})
}

// FuzzParseRegistryOrReference: any string is a registry alone, a
// reference that prints back to itself, or a ReferenceError.
func FuzzParseRegistryOrReference(f *testing.F) {
	for _, s := range []string{
		"127.0.0.1:5000", "ghcr.io/", "alpine", "alpine:3.19", "node:20", "[::1]:5000", "docker.io/alpine",
		"127.0.0.1:5000/test/small@sha256:" + strings.Repeat("a", 64), "host:99999", "a/", "/", "@x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ref, err := ParseRegistryOrReference(s)
		if err != nil {
			if !errors.As(err, new(*ReferenceError)) {
				t.Fatalf("ParseRegistryOrReference(%q): error %T is not a ReferenceError", s, err)
			}
			return
		}
		if ref.Repository == "" {
			if ref.Registry == "" || ref.Tag != "" || ref.Digest != "" || strings.Contains(ref.Registry, "/") {
				t.Fatalf("ParseRegistryOrReference(%q): %+v: want a registry alone", s, ref)
			}
			return
		}
		if back, err := ParseReference(ref.String(), ""); err != nil || back != ref {
			t.Fatalf("ParseRegistryOrReference(%q) = %+v, prints %q, which parses to %+v, %v", s, ref, ref.String(), back, err)
		}
	})
}

// fuzzRegistry serves one repository "r" whose tag "t" is top, any digest
// of child or top the child or top (the child's media type from its body),
// and the config blob by its digest. In top and child "@CONFIG@" stands for
// the config's digest and 8888888 for its size, "@CHILD@" for the child's
// digest and 7777777 for its size.
func fuzzRegistry(t *testing.T, top, child, config []byte, contentType string) string {
	cfgDigest := digest.FromBytes(config)
	child = []byte(strings.ReplaceAll(strings.ReplaceAll(string(child), "@CONFIG@", cfgDigest.String()), "8888888", strconv.Itoa(len(config))))
	childDigest := digest.FromBytes(child)
	s := strings.ReplaceAll(string(top), "@CONFIG@", cfgDigest.String())
	s = strings.ReplaceAll(s, "@CHILD@", childDigest.String())
	s = strings.ReplaceAll(s, "7777777", strconv.Itoa(len(child)))
	top = []byte(strings.ReplaceAll(s, "8888888", strconv.Itoa(len(config))))
	topDigest := digest.FromBytes(top)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		serve := func(b []byte, ct string) {
			w.Header().Set("Content-Type", ct)
			w.Header().Set("Content-Length", strconv.Itoa(len(b)))
			w.Write(b)
		}
		switch p := r.URL.Path; {
		case p == "/v2/":
			serve([]byte("{}"), "application/json")
		case p == "/v2/r/manifests/t" || p == "/v2/r/manifests/"+topDigest.String():
			serve(top, contentType)
		case p == "/v2/r/manifests/"+childDigest.String():
			serve(child, "application/json")
		case p == "/v2/r/blobs/"+cfgDigest.String():
			serve(config, "application/octet-stream")
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// FuzzResolveManifest: any manifest, index and config a registry sends
// resolve to an image or an error, never a panic or a hang; a resolved
// image's layer IDs are safe directory names (fs/ shows them as
// layers/<id>/).
func FuzzResolveManifest(f *testing.F) {
	const cfg = `{"architecture":"amd64","os":"linux","created":"2024-01-02T03:04:05Z","rootfs":{"type":"layers","diff_ids":["sha256:` +
		"1111111111111111111111111111111111111111111111111111111111111111" + `"]},"history":[{"created_by":"x"}]}`
	const manifest = `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"@CONFIG@","size":8888888},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:` +
		"2222222222222222222222222222222222222222222222222222222222222222" + `","size":123,"annotations":{"containerd.io/snapshot/stargz/toc.digest":"sha256:` +
		"3333333333333333333333333333333333333333333333333333333333333333" + `"}}]}`
	const index = `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"@CHILD@","size":7777777,"platform":{"architecture":"amd64","os":"linux"}}]}`
	const artifact = `{"schemaVersion":2,"config":{"mediaType":"application/vnd.example+json","digest":"@CONFIG@","size":8888888},"layers":[{"mediaType":"text/plain","digest":"sha256:` +
		"4444444444444444444444444444444444444444444444444444444444444444" + `","size":1}]}`
	const schema1 = `{"schemaVersion":1,"name":"r","tag":"t","architecture":"amd64","fsLayers":[{"blobSum":"sha256:` +
		"5555555555555555555555555555555555555555555555555555555555555555" + `"}],"history":[{"v1Compatibility":"{\"id\":\"` +
		"6666666666666666666666666666666666666666666666666666666666666666" + `\",\"created\":\"2024-01-02T03:04:05Z\"}"}]}`
	for _, seed := range []struct {
		top, child, config string
		ct                 uint8
	}{
		{manifest, "", cfg, 0}, {manifest, "", cfg, 1}, {index, manifest, cfg, 0}, {index, manifest, cfg, 2}, {artifact, "", "{}", 0},
		{schema1, "", "", 5}, {schema1, "", "", 0}, {index, index, cfg, 0}, {manifest, "", "not json", 0}, {"{}", "", "", 0},
	} {
		f.Add([]byte(seed.top), []byte(seed.child), []byte(seed.config), seed.ct)
	}
	contentTypes := []string{"", MediaTypeOCIManifest, MediaTypeOCIIndex, MediaTypeDockerManifest, MediaTypeDockerList,
		MediaTypeDockerSchema1, MediaTypeDockerSchema1JWS, "application/json"}
	f.Fuzz(func(t *testing.T, top, child, config []byte, ct uint8) {
		if len(top) > 64<<10 || len(child) > 64<<10 || len(config) > 64<<10 {
			return
		}
		host := fuzzRegistry(t, top, child, config, contentTypes[int(ct)%len(contentTypes)])
		opts := testOptions()
		opts.PlainHTTP, opts.MaxRetries, opts.API = true, -1, APIV2
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, err := New(ctx, host, opts)
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		img, err := c.Resolve(ctx, "r", "t", Platform{OS: "linux", Architecture: "amd64"})
		if err != nil {
			if ctx.Err() != nil {
				t.Fatalf("Resolve hung until the fuzz timeout: %v", err)
			}
			return
		}
		for i, l := range img.Layers {
			if l.ID == "" || strings.ContainsAny(l.ID, "/\x00") || l.ID == "." || l.ID == ".." {
				t.Fatalf("layer %d: ID %q is not a safe directory name", i, l.ID)
			}
		}
	})
}

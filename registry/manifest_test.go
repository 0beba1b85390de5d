package registry

import (
	"encoding/base64"
	"encoding/json"
	"net/url"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

func TestChainIDs(t *testing.T) {
	// Known values, computed outside Go with printf | sha256sum.
	a := digest.Digest("sha256:ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb")
	b := digest.Digest("sha256:3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d")
	c := digest.Digest("sha256:2e7d2c03a9507ae265ecf5b5356885a53393a2029d241394997265a1a25aefc6")
	tests := []struct {
		in   []digest.Digest
		want []digest.Digest
	}{
		{nil, []digest.Digest{}},
		{[]digest.Digest{a}, []digest.Digest{a}},
		{[]digest.Digest{a, b}, []digest.Digest{a, "sha256:51c0c8ace48498d6f5fee6b0592cc06f2da0f3cbe09c5a34a97dce85c3889676"}},
		{[]digest.Digest{a, b, c}, []digest.Digest{a, "sha256:51c0c8ace48498d6f5fee6b0592cc06f2da0f3cbe09c5a34a97dce85c3889676",
			"sha256:2fce7f8ce91bcf0a1428b36e1024639fdbd9469eea762dba98aa749631885106"}},
	}
	for _, tt := range tests {
		got := ChainIDs(tt.in)
		if len(got) != len(tt.want) {
			t.Fatalf("ChainIDs(%v): got %d IDs, want %d", tt.in, len(got), len(tt.want))
		}
		for i := range got {
			if got[i] != tt.want[i] {
				t.Errorf("ChainIDs(%v)[%d]: got %s, want %s", tt.in, i, got[i], tt.want[i])
			}
		}
	}
}

// emptyContainerConfig is what docker save writes for a layer below the top.
const emptyContainerConfig = `{"Hostname":"","Domainname":"","User":"","AttachStdin":false,"AttachStdout":false,` +
	`"AttachStderr":false,"Tty":false,"OpenStdin":false,"StdinOnce":false,"Env":null,"Cmd":null,"Image":"",` +
	`"Volumes":null,"WorkingDir":"","Entrypoint":null,"OnBuild":null,"Labels":null}`

func TestLegacyLayerJSON(t *testing.T) {
	config := `{"created":"2022-03-04T05:06:07.123456789Z","author":"me","architecture":"arm64","variant":"v8","os":"linux",` +
		`"config":{"Env":["PATH=/bin"],"Cmd":"sh","ExposedPorts":{"80/tcp":{}},"Labels":{"a":"b"},"WorkingDir":"/w",` +
		`"Healthcheck":{"Test":["CMD","true"],"Interval":1000000000}},` +
		`"rootfs":{"type":"layers","diff_ids":["sha256:` + strings.Repeat("1", 64) + `","sha256:` + strings.Repeat("2", 64) + `"]},` +
		`"history":[{"created_by":"x"}],"unknown_field":42}`
	layers := []Layer{{ID: strings.Repeat("a", 64)}, {ID: strings.Repeat("b", 64)}}
	got, err := legacyLayerJSON([]byte(config), layers)
	if err != nil {
		t.Fatal(err)
	}
	wantBase := `{"id":"` + layers[0].ID + `","created":"1970-01-01T00:00:00Z","container_config":` + emptyContainerConfig + `,"os":"linux"}`
	wantTop := `{"id":"` + layers[1].ID + `","parent":"` + layers[0].ID + `","created":"2022-03-04T05:06:07.123456789Z",` +
		`"container_config":` + emptyContainerConfig + `,"author":"me",` +
		`"config":{"Hostname":"","Domainname":"","User":"","AttachStdin":false,"AttachStdout":false,"AttachStderr":false,` +
		`"ExposedPorts":{"80/tcp":{}},"Tty":false,"OpenStdin":false,"StdinOnce":false,"Env":["PATH=/bin"],"Cmd":["sh"],` +
		`"Healthcheck":{"Test":["CMD","true"],"Interval":1000000000},"Image":"","Volumes":null,"WorkingDir":"/w",` +
		`"Entrypoint":null,"OnBuild":null,"Labels":{"a":"b"}},"architecture":"arm64","variant":"v8","os":"linux"}`
	if string(got[0]) != wantBase {
		t.Errorf("base layer JSON:\ngot  %s\nwant %s", got[0], wantBase)
	}
	if string(got[1]) != wantTop {
		t.Errorf("top layer JSON:\ngot  %s\nwant %s", got[1], wantTop)
	}
	again, _ := legacyLayerJSON([]byte(config), layers)
	if string(again[1]) != string(got[1]) {
		t.Errorf("not deterministic")
	}

	// A config docker could not read still yields JSON, with what is known.
	odd := `{"created":"2022-03-04T05:06:07Z","os":"linux","architecture":"amd64","config":{"Env":"not a list"}}`
	got, err = legacyLayerJSON([]byte(odd), layers[:1])
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"` + layers[0].ID + `","created":"2022-03-04T05:06:07Z","container_config":` + emptyContainerConfig +
		`,"architecture":"amd64","os":"linux"}`
	if string(got[0]) != want {
		t.Errorf("odd config:\ngot  %s\nwant %s", got[0], want)
	}
}

func TestManifestMediaType(t *testing.T) {
	tests := []struct {
		ct, body, want string
	}{
		{MediaTypeOCIManifest, `{}`, MediaTypeOCIManifest},
		{MediaTypeDockerList + "; charset=utf-8", `{}`, MediaTypeDockerList},
		{"application/json", `{"schemaVersion":2,"mediaType":"` + MediaTypeDockerManifest + `"}`, MediaTypeDockerManifest},
		{"application/json", `{"schemaVersion":2,"manifests":[]}`, MediaTypeOCIIndex},
		{"", `{"schemaVersion":2,"config":{},"layers":[]}`, MediaTypeOCIManifest},
		{"text/plain", `{"schemaVersion":1,"fsLayers":[],"signatures":[]}`, MediaTypeDockerSchema1JWS},
		{"text/plain", `{"schemaVersion":1,"fsLayers":[]}`, MediaTypeDockerSchema1},
		{"application/json", `not json`, ""},
	}
	for _, tt := range tests {
		if got := manifestMediaType(tt.ct, []byte(tt.body)); got != tt.want {
			t.Errorf("manifestMediaType(%q, %s): got %q, want %q", tt.ct, tt.body, got, tt.want)
		}
	}
}

func TestSchema1Payload(t *testing.T) {
	payload := "{\n   \"schemaVersion\": 1,\n   \"name\": \"x\"\n}"
	// A signed manifest: the payload minus its closing "\n}", the
	// signatures, and the closing brace back.
	cut := len(payload) - 2
	tail := payload[cut:]
	prot, _ := json.Marshal(map[string]any{"formatLength": cut, "formatTail": base64.RawURLEncoding.EncodeToString([]byte(tail))})
	signed := payload[:cut] + ",\n   \"signatures\": [{\"protected\": \"" + base64.RawURLEncoding.EncodeToString(prot) + "\"}]" + tail
	got, err := schema1Payload([]byte(signed))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != payload {
		t.Errorf("got %q, want %q", got, payload)
	}
	for _, bad := range []string{`nope`, `{"signatures":[{"protected":"!!"}]}`,
		`{"signatures":[{"protected":"` + base64.RawURLEncoding.EncodeToString([]byte(`{"formatLength":99999}`)) + `"}]}`} {
		if _, err := schema1Payload([]byte(bad)); err == nil {
			t.Errorf("schema1Payload(%s): got no error", bad)
		}
	}
}

func TestNextLink(t *testing.T) {
	base, _ := url.Parse("http://r.io/v2/_catalog?n=2")
	tests := []struct {
		header, want string
		err          bool
	}{
		{``, ``, false},
		{`</v2/_catalog?last=b&n=2>; rel="next"`, `http://r.io/v2/_catalog?last=b&n=2`, false},
		{`<http://r.io/v2/_catalog?last=b&n=2>; rel=next`, `http://r.io/v2/_catalog?last=b&n=2`, false},
		{`</a>; rel="prev", </b>; rel="next"`, `http://r.io/b`, false},
		{`</a>; rel="prev"`, ``, false},
		{`<http://evil.example/v2/_catalog>; rel="next"`, ``, true},
	}
	for _, tt := range tests {
		got, err := nextLink(base, tt.header, "r.io")
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("nextLink(%q): got %q, %v; want %q, error %v", tt.header, got, err, tt.want, tt.err)
		}
	}
}

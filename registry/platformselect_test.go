package registry

import "testing"

func TestSelectPlatform(t *testing.T) {
	pm := func(s string) PlatformManifest {
		p, err := ParsePlatform(s)
		if err != nil {
			t.Fatal(err)
		}
		return PlatformManifest{Platform: p}
	}
	typical := []PlatformManifest{
		pm("linux/amd64"), pm("linux/arm/v6"), pm("linux/arm/v7"), pm("linux/arm64/v8"),
		pm("linux/386"), pm("linux/ppc64le"), pm("windows/amd64"), pm("unknown/unknown"),
	}
	tests := []struct {
		name    string
		entries []PlatformManifest
		want    string
		index   int
	}{
		{"exact amd64", typical, "linux/amd64", 0},
		{"exact arm v7", typical, "linux/arm/v7", 2},
		{"exact arm v6", typical, "linux/arm/v6", 1},
		{"arm without variant is v7", typical, "linux/arm", 2},
		{"arm64 without variant is v8", typical, "linux/arm64", 3},
		{"arm64 v8 matches an entry without variant", []PlatformManifest{pm("linux/amd64"), pm("linux/arm64")}, "linux/arm64/v8", 1},
		{"aarch64 alias", typical, "linux/aarch64", 3},
		{"x86_64 alias", typical, "linux/x86_64", 0},
		{"i386 alias", typical, "linux/i386", 4},
		{"armhf alias", typical, "linux/armhf", 2},
		{"os case", typical, "Linux/AMD64", 0},
		{"windows", typical, "windows/amd64", 6},
		{"arm v7 falls back to v6", []PlatformManifest{pm("linux/arm/v5"), pm("linux/arm/v6")}, "linux/arm/v7", 1},
		{"arm v7 falls back to v5", []PlatformManifest{pm("linux/arm/v5"), pm("linux/arm/v8")}, "linux/arm/v7", 0},
		{"arm v6 does not run v7", []PlatformManifest{pm("linux/arm/v7")}, "linux/arm/v6", -1},
		{"amd64 v3 runs v2", []PlatformManifest{pm("linux/amd64/v4"), pm("linux/amd64/v2")}, "linux/amd64/v3", 1},
		{"amd64 v3 prefers exact", []PlatformManifest{pm("linux/amd64"), pm("linux/amd64/v3")}, "linux/amd64/v3", 1},
		{"amd64 v3 runs plain amd64", []PlatformManifest{pm("linux/arm64"), pm("linux/amd64")}, "linux/amd64/v3", 1},
		{"amd64 does not run v2", []PlatformManifest{pm("linux/amd64/v2")}, "linux/amd64", -1},
		{"arm64 v8.2 runs v8", []PlatformManifest{pm("linux/arm64")}, "linux/arm64/v8.2", 0},
		{"no arch", typical, "linux/s390x", -1},
		{"no os", typical, "darwin/arm64", -1},
		{"first of equals", []PlatformManifest{pm("linux/amd64"), pm("linux/amd64")}, "linux/amd64", 0},
		{"skips entries without platform", []PlatformManifest{{}, pm("linux/amd64")}, "linux/amd64", 1},
		{"empty index", nil, "linux/amd64", -1},
		{"unknown only when asked", []PlatformManifest{pm("unknown/unknown")}, "unknown/unknown", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, err := ParsePlatform(tt.want)
			if err != nil {
				t.Fatal(err)
			}
			if got := SelectPlatform(tt.entries, want); got != tt.index {
				t.Errorf("SelectPlatform(%s): got %d, want %d", tt.want, got, tt.index)
			}
		})
	}
}

package registry

import (
	"strconv"
	"strings"
)

// SelectPlatform returns the index of the entry of an index that best
// matches want, or -1 if none does. After normalizing names as containerd
// does (x86_64 → amd64, aarch64 → arm64, armhf → arm/v7, an arm64 without
// variant is v8, an arm without variant v7, an amd64 without variant v1):
// first an exact os/arch/variant match; then the same os/arch with the
// closest older variant the wanted one can run (arm v7 runs v6 and v5,
// amd64 v3 runs v2 and v1, arm64 v8.2 runs v8); else none. Entries
// without a platform (attestations are unknown/unknown) never match. Ties
// go to the first entry in index order.
func SelectPlatform(entries []PlatformManifest, want Platform) int {
	w := normalizePlatform(want)
	wv, wok := variantVersion(w.Variant)
	best, bestRank := -1, -1
	for i, e := range entries {
		if e.Platform.OS == "" || e.Platform.Architecture == "" {
			continue
		}
		p := normalizePlatform(e.Platform)
		if p.OS != w.OS || p.Architecture != w.Architecture {
			continue
		}
		rank := -1
		if p.Variant == w.Variant {
			rank = 0
		} else if ev, ok := variantVersion(p.Variant); ok && wok && ev < wv {
			// An older variant of the same architecture; the closer the better.
			rank = 1 + (wv - ev)
		}
		if rank >= 0 && (best < 0 || rank < bestRank) {
			best, bestRank = i, rank
		}
	}
	return best
}

// normalizePlatform maps the names people and tools use to the ones OCI
// indexes use, and fills the implied default variants.
func normalizePlatform(p Platform) Platform {
	p.OS = strings.ToLower(p.OS)
	p.Architecture = strings.ToLower(p.Architecture)
	p.Variant = strings.ToLower(p.Variant)
	switch p.Architecture {
	case "i386", "i486", "i586", "i686":
		p.Architecture = "386"
	case "x86_64", "x86-64":
		p.Architecture = "amd64"
	case "aarch64":
		p.Architecture = "arm64"
	case "armhf":
		p.Architecture, p.Variant = "arm", "v7"
	case "armel":
		p.Architecture, p.Variant = "arm", "v6"
	}
	if p.Variant != "" && p.Variant[0] >= '0' && p.Variant[0] <= '9' {
		p.Variant = "v" + p.Variant // "8" → "v8", as containerd accepts
	}
	switch p.Architecture {
	case "arm64":
		if p.Variant == "" || p.Variant == "v8.0" {
			p.Variant = "v8"
		}
	case "arm":
		if p.Variant == "" {
			p.Variant = "v7"
		}
	case "amd64":
		if p.Variant == "" {
			p.Variant = "v1"
		}
	}
	return p
}

// variantVersion reads "vN" or "vN.M" as N*100+M, so variants of one
// architecture can be ordered.
func variantVersion(v string) (int, bool) {
	s, ok := strings.CutPrefix(v, "v")
	if !ok || s == "" {
		return 0, false
	}
	maj, min, hasMin := strings.Cut(s, ".")
	a, err := strconv.Atoi(maj)
	if err != nil || a < 0 {
		return 0, false
	}
	b := 0
	if hasMin {
		if b, err = strconv.Atoi(min); err != nil || b < 0 || b > 99 {
			return 0, false
		}
	}
	return a*100 + b, true
}

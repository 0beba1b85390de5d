package tarsum

import (
	"archive/tar"
	"bytes"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"testing"
)

// The expected values in this file are the checksums published in docker's
// pkg/tarsum/tarsum_test.go, for archives whose content that test describes
// completely. Two generations of them exist: docker built with the Go of the
// v1-registry era (uname/gname hashed, typeflag hashed as stored) and moby
// since 2018 (uname/gname blanked, Go promoting the legacy typeflag). Both
// must come out of this package, under the matching Options.

var currentMoby = Options{IgnoreOwnerNames: true, PromoteLegacyTypeflag: true}

// dockerIterationHeaders are the single-entry archives of docker's TestIteration.
func dockerIterationHeaders() map[string]struct {
	hdr  *tar.Header
	body []byte
} {
	owner := func(name string, xattrs map[string]string) *tar.Header {
		h := &tar.Header{Name: name, Uid: 1000, Gid: 1000, Uname: "slartibartfast", Gname: "users", Size: 4, Typeflag: tar.TypeReg}
		for k, v := range xattrs {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
		return h
	}
	type entry = struct {
		hdr  *tar.Header
		body []byte
	}
	return map[string]entry{
		"file.txt":     {&tar.Header{Name: "file.txt", Typeflag: tar.TypeReg}, nil},
		"another.txt":  {owner("another.txt", nil), []byte("test")},
		"xattrs lower": {owner("xattrs.txt", map[string]string{"user.key1": "value1", "user.key2": "value2"}), []byte("test")},
		"xattrs upper": {owner("xattrs.txt", map[string]string{"user.KEY1": "value1", "user.key2": "value2"}), []byte("test")},
		"xattrs v0":    {owner("xattrs.txt", map[string]string{"user.NOT": "CALCULATED"}), []byte("test")},
	}
}

func TestDockerIterationFixtures(t *testing.T) {
	tests := []struct {
		archive string
		version Version
		opts    Options
		want    string
	}{
		// Values from docker releases that filled v1 registries.
		{"file.txt", Version0, Options{}, "tarsum+sha256:626c4a2e9a467d65c33ae81f7f3dedd4de8ccaee72af73223c4bc4718cbc7bbd"},
		{"file.txt", VersionDev, Options{}, "tarsum.dev+sha256:6ffd43a1573a9913325b4918e124ee982a99c0f3cba90fc032a65f5e20bdd465"},
		{"another.txt", VersionDev, Options{}, "tarsum.dev+sha256:b38166c059e11fb77bef30bf16fba7584446e80fcc156ff46d47e36c5305d8ef"},
		{"xattrs lower", VersionDev, Options{}, "tarsum.dev+sha256:4cc2e71ac5d31833ab2be9b4f7842a14ce595ec96a37af4ed08f87bc374228cd"},
		{"xattrs upper", VersionDev, Options{}, "tarsum.dev+sha256:65f4284fa32c0d4112dd93c3637697805866415b570587e4fd266af241503760"},
		{"xattrs v0", Version0, Options{}, "tarsum+sha256:c12bb6f1303a9ddbf4576c52da74973c00d14c109bcfa76b708d5da1154a07fa"},
		// The same archives as current moby sums them.
		{"file.txt", Version0, currentMoby, "tarsum+sha256:626c4a2e9a467d65c33ae81f7f3dedd4de8ccaee72af73223c4bc4718cbc7bbd"},
		{"file.txt", VersionDev, currentMoby, "tarsum.dev+sha256:6ffd43a1573a9913325b4918e124ee982a99c0f3cba90fc032a65f5e20bdd465"},
		{"another.txt", VersionDev, currentMoby, "tarsum.dev+sha256:862964db95e0fa7e42836ae4caab3576ab1df8d275720a45bdd01a5a3730cc63"},
		{"xattrs lower", VersionDev, currentMoby, "tarsum.dev+sha256:4b1ba03544b49d96a32bacc77f8113220bd2f6a77e7e6d1e7b33cd87117d88e7"},
		{"xattrs upper", VersionDev, currentMoby, "tarsum.dev+sha256:410b602c898bd4e82e800050f89848fc2cf20fd52aa59c1ce29df76b878b84a6"},
		{"xattrs v0", Version0, currentMoby, "tarsum+sha256:b1f97eab73abd7593c245e51070f9fbdb1824c6b00a0b7a3d7f0015cd05e9e86"},
	}
	archives := dockerIterationHeaders()
	for _, tc := range tests {
		a := archives[tc.archive]
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		if err := tw.WriteHeader(a.hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(a.body); err != nil {
			t.Fatal(err)
		}
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		opts := tc.opts
		opts.Version = tc.version
		if got := sumOf(t, buf.Bytes(), opts, nil); got != tc.want {
			t.Errorf("%s %v %+v: got %s, want %s", tc.archive, tc.version, tc.opts, got, tc.want)
		}
	}
}

// dockerSizedTar is docker's sizedTar(1, 1 MiB, zeros): one 1 MiB file of
// zeros named "/testdata0", mode 0755. Old docker wrote it with Typeflag left
// zero, which the Go of its time stored as '\x00'; current moby sets TypeReg.
func dockerSizedTar(t *testing.T, legacyTypeflag bool) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "/testdata0", Mode: 0o755, Size: 1 << 20, Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	if legacyTypeflag {
		setTypeflag(b, 0, tar.TypeRegA)
	}
	return b
}

func TestDockerSizedTarFixtures(t *testing.T) {
	md5Alg := Algorithm{Name: "md5", New: md5.New}
	sha1Alg := Algorithm{Name: "sha1", New: sha1.New}
	sha224 := Algorithm{Name: "sha224", New: sha256.New224}
	sha384 := Algorithm{Name: "sha384", New: sha512.New384}
	tests := []struct {
		name   string
		legacy bool // '\x00' typeflag as old docker's test wrote it
		opts   Options
		want   string
	}{
		{"v1-era sha256", true, Options{}, "tarsum+sha256:8bf12d7e67c51ee2e8306cba569398b1b9f419969521a12ffb9d8875e8836738"},
		{"v1-era md5", true, Options{Hash: md5Alg}, "tarsum+md5:0d7529ec7a8360155b48134b8e599f53"},
		{"v1-era sha1", true, Options{Hash: sha1Alg}, "tarsum+sha1:f1fee39c5925807ff75ef1925e7a23be444ba4df"},
		{"v1-era sha224", true, Options{Hash: sha224}, "tarsum+sha224:6319390c0b061d639085d8748b14cd55f697cf9313805218b21cf61c"},
		{"v1-era sha384", true, Options{Hash: sha384}, "tarsum+sha384:a578ce3ce29a2ae03b8ed7c26f47d0f75b4fc849557c62454be4b5ffd66ba021e713b48ce71e947b43aab57afd5a7636"},
		{"v1-era sha512", true, Options{Hash: SHA512}, "tarsum+sha512:e9bfb90ca5a4dfc93c46ee061a5cf9837de6d2fdf82544d6460d3147290aecfabf7b5e415b9b6e72db9b8941f149d5d69fb17a394cbfaf2eac523bd9eae21855"},
		{"current sha256", false, currentMoby, "tarsum+sha256:75258b2c5dcd9adfe24ce71eeca5fc5019c7e669912f15703ede92b1a60cb11f"},
		{"current md5", false, Options{Hash: md5Alg}, "tarsum+md5:3a6cdb475d90459ac0d3280703d17be2"},
		{"current sha1", false, Options{Hash: sha1Alg}, "tarsum+sha1:14b5e0d12a0c50a4281e86e92153fa06d55d00c6"},
		{"current sha224", false, Options{Hash: sha224}, "tarsum+sha224:dd8925b7a4c71b13f3a68a0f9428a757c76b93752c398f272a9062d5"},
		{"current sha384", false, Options{Hash: sha384}, "tarsum+sha384:e39e82f40005134bed13fb632d1a5f2aa4675c9ddb4a136fbcec202797e68d2f635e1200dee2e3a8d7f69d54d3f2fd27"},
		{"current sha512", false, Options{Hash: SHA512}, "tarsum+sha512:7c56de40b2d1ed3863ff25d83b59cdc8f53e67d1c01c3ee8f201f8e4dec3107da976d0c0ec9109c962a152b32699fe329b2dab13966020e400c32878a0761a7e"},
		// Current moby reads the legacy archive as if it said TypeReg.
		{"legacy archive as current moby", true, currentMoby, "tarsum+sha256:75258b2c5dcd9adfe24ce71eeca5fc5019c7e669912f15703ede92b1a60cb11f"},
	}
	archives := map[bool][]byte{true: dockerSizedTar(t, true), false: dockerSizedTar(t, false)}
	for _, tc := range tests {
		if got := sumOf(t, archives[tc.legacy], tc.opts, nil); got != tc.want {
			t.Errorf("%s: got %s, want %s", tc.name, got, tc.want)
		}
	}
}

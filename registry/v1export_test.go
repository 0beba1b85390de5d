package registry

import (
	"net/http"
	"time"

	"github.com/sirupsen/logrus"
)

// Exports for the external v1 tests (package registry_test), which import
// registrytest's v1 server beside the v2 one.

// V1TestOptions are the Options a v1 test client is made with, in the v1
// tests' words. Zero fields mean the Options defaults.
type V1TestOptions struct {
	Username, Password  string
	PlainHTTP           bool
	Transport           http.RoundTripper
	MaxRetries          int
	RetryBase, RetryMax time.Duration
	RetryAfterMax       time.Duration
	UserAgent           string
	RequestTimeout      time.Duration
	MaxResumes          int
	Logger              *logrus.Entry
}

// NewV1TestClient is newV1Client with o.
func NewV1TestClient(host string, o V1TestOptions) (*v1Client, error) {
	opts := Options{
		API:             APIV1,
		PlainHTTP:       o.PlainHTTP,
		Transport:       o.Transport,
		MaxRetries:      o.MaxRetries,
		RetryBackoffMin: o.RetryBase,
		RetryBackoffMax: o.RetryMax,
		RetryAfterMax:   o.RetryAfterMax,
		UserAgent:       o.UserAgent,
		RequestTimeout:  o.RequestTimeout,
		MaxResumes:      o.MaxResumes,
		Logger:          o.Logger,
	}.withDefaults()
	return newV1Client(host, opts, o.Username, o.Password)
}

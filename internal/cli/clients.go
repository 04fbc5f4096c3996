package cli

import (
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	dp "github.com/aws/aws-sdk-go-v2/service/bedrockagentcore"
	cp "github.com/aws/aws-sdk-go-v2/service/bedrockagentcorecontrol"
)

// clients are the connections to a Berth server: its AgentCore control and
// data planes through the AWS SDK, and Berth's own API.
type clients struct {
	control *cp.Client
	data    *dp.Client
	berth   *berthAPI
}

func newClients(s Settings) *clients {
	creds := credentials.NewStaticCredentialsProvider(s.AccessKeyID.Value, s.SecretAccessKey.Value, s.SessionToken)
	cfg := aws.Config{
		Region:      s.Region.Value,
		Credentials: creds,
		AppID:       "berth-cli",
		// A local server is either there or not: retry briefly, so that
		// "server not running" is reported in about a second.
		Retryer: func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = 2
				o.MaxBackoff = 500 * time.Millisecond
			})
		},
	}
	control, data := s.Server.Value, s.DataServer.Value
	return &clients{
		control: cp.NewFromConfig(cfg, func(o *cp.Options) { o.BaseEndpoint = &control }),
		data:    dp.NewFromConfig(cfg, func(o *dp.Options) { o.BaseEndpoint = &data }),
		berth:   newBerthAPI(s.Server.Value, creds, s.Region.Value),
	}
}

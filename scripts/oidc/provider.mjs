// OpenID provider for the integration tests, built on the certified npm
// package `oidc-provider`. It listens on 127.0.0.1 only and keeps everything
// in memory; a restart forgets every session, grant and signing key.
//
// Users and their password (the same for all: "test-password"):
//   alice  team:platform, oncall    MFA
//   bob    team:platform, oncall    MFA
//   carol  team:security, approvers MFA
//   dave   team:data, approvers     MFA
//   erin   team:platform, oncall    no MFA
// An MFA login carries amr ["pwd", "mfa"]; erin's carries ["pwd"] only.
//
// Clients:
//   breakglass-cli  public native client: device flow, code + PKCE on a loopback
//                   redirect (http://127.0.0.1:<any port>/callback), refresh tokens
//   broker          confidential (secret "broker-secret"): code + PKCE, device flow,
//                   client_credentials, refresh tokens; redirect http://127.0.0.1:9/cb
//   ml-pipeline     workload (secret "pipeline-secret"): client_credentials only
//
// Tokens: the ID token carries `groups`, `amr` and `auth_time`. Access tokens
// are JWTs (RS256) with audience "breakglass" and carry `groups`, `amr` and
// `auth_time` for users; a client_credentials token has sub = client id.
//
// The login page is a plain HTML form (hidden field `uid`, inputs `login` and
// `password`) so tests can drive it without a browser. Consent is implied
// for these first-party clients.
import Provider from 'oidc-provider';
import { generateKeyPairSync } from 'node:crypto';

const PORT = Number(process.env.PORT || 53000);
const ISSUER = process.env.ISSUER || `http://127.0.0.1:${PORT}`;
const PASSWORD = 'test-password';
const AUDIENCE = 'breakglass';
const RESOURCE = 'urn:breakglass:api';
const SCOPES = 'openid email groups offline_access';

const USERS = {
  alice: { groups: ['team:platform', 'oncall'], mfa: true },
  bob: { groups: ['team:platform', 'oncall'], mfa: true },
  carol: { groups: ['team:security', 'approvers'], mfa: true },
  dave: { groups: ['team:data', 'approvers'], mfa: true },
  erin: { groups: ['team:platform', 'oncall'], mfa: false },
};

const amrFor = (id) => (USERS[id]?.mfa ? ['pwd', 'mfa'] : ['pwd']);

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'test-key-1', use: 'sig', alg: 'RS256' };

const configuration = {
  clients: [
    {
      client_id: 'breakglass-cli',
      token_endpoint_auth_method: 'none',
      // native: any loopback port is accepted for these redirects (RFC 8252 7.3)
      application_type: 'native',
      redirect_uris: ['http://127.0.0.1:9/cb', 'http://127.0.0.1/callback'],
      grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'authorization_code', 'refresh_token'],
      response_types: ['code'],
    },
    {
      client_id: 'broker',
      client_secret: 'broker-secret',
      token_endpoint_auth_method: 'client_secret_basic',
      redirect_uris: ['http://127.0.0.1:9/cb'],
      grant_types: [
        'authorization_code', 'client_credentials', 'refresh_token',
        'urn:ietf:params:oauth:grant-type:device_code',
      ],
      response_types: ['code'],
    },
    {
      client_id: 'ml-pipeline',
      client_secret: 'pipeline-secret',
      token_endpoint_auth_method: 'client_secret_basic',
      redirect_uris: [],
      grant_types: ['client_credentials'],
      response_types: [],
    },
  ],
  jwks: { keys: [jwk] },
  cookies: { keys: ['breakglass-test-cookie-key'] },
  conformIdTokenClaims: false, // put groups in the ID token even when an access token is issued
  features: {
    devInteractions: { enabled: false },
    deviceFlow: { enabled: true },
    clientCredentials: { enabled: true },
    revocation: { enabled: true },
    introspection: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => RESOURCE,
      getResourceServerInfo: () => ({
        scope: 'access:request access:approve',
        audience: AUDIENCE,
        accessTokenFormat: 'jwt',
        accessTokenTTL: 300,
      }),
      useGrantedResource: () => true,
    },
  },
  claims: {
    acr: null, amr: null, auth_time: null, sid: null, iss: null,
    openid: ['sub', 'acr', 'amr', 'auth_time'], // always in the ID token: the broker checks MFA age
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  scopes: ['openid', 'email', 'groups', 'offline_access', 'access:request', 'access:approve'],
  findAccount: (ctx, id) => {
    if (!USERS[id]) return undefined;
    return {
      accountId: id,
      claims: () => ({
        sub: id, email: `${id}@example.test`, email_verified: true, groups: USERS[id].groups,
      }),
    };
  },
  extraTokenClaims: (ctx, token) => {
    if (!token.accountId || !USERS[token.accountId]) return undefined;
    const { entities } = ctx.oidc;
    const source = entities.AuthorizationCode || entities.DeviceCode || entities.RefreshToken;
    return {
      groups: USERS[token.accountId].groups,
      amr: source?.amr || amrFor(token.accountId),
      auth_time: source?.authTime,
    };
  },
  loadExistingGrant: async (ctx) => {
    const { client, session } = ctx.oidc;
    const grantId = ctx.oidc.result?.consent?.grantId || session.grantIdFor(client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({ clientId: client.clientId, accountId: session.accountId });
    grant.addOIDCScope(SCOPES);
    grant.addOIDCClaims(['email', 'email_verified', 'groups']);
    grant.addResourceScope(RESOURCE, 'access:request access:approve');
    await grant.save();
    return grant;
  },
  ttl: {
    IdToken: 300, AccessToken: 300, DeviceCode: 600, RefreshToken: 3600,
    Session: 3600, Interaction: 600, Grant: 3600, ClientCredentials: 300,
  },
};

const oidc = new Provider(ISSUER, configuration);
oidc.on('server_error', (ctx, err) => console.error('server_error', err));

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

const loginPage = (uid, message = '') => `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Sign-in</title></head><body>
<h1>Sign-in</h1>${message ? `<p role="alert">${esc(message)}</p>` : ''}
<form method="post" action="/interaction/${esc(uid)}/login">
<input type="hidden" name="uid" value="${esc(uid)}">
<input type="text" name="login" placeholder="login" autofocus>
<input type="password" name="password" placeholder="password">
<button type="submit">Sign-in</button>
</form></body></html>`;

async function readForm(req) {
  let body = '';
  for await (const chunk of req) body += chunk;
  return Object.fromEntries(new URLSearchParams(body));
}

// Interaction routes, mounted before the provider's own routes.
oidc.use(async (ctx, next) => {
  const match = ctx.path.match(/^\/interaction\/([^/]+)(\/login|\/abort)?$/);
  if (!match) return next();
  ctx.set('cache-control', 'no-store');
  try {
    const details = await oidc.interactionDetails(ctx.req, ctx.res);
    const [, uid, action] = match;
    if (ctx.method === 'GET' && !action) {
      if (details.prompt.name !== 'login') {
        // consent is implied for first-party clients
        const result = { consent: { grantId: details.grantId } };
        return oidc.interactionFinished(ctx.req, ctx.res, result, { mergeWithLastSubmission: true });
      }
      ctx.type = 'html';
      ctx.body = loginPage(uid);
      return undefined;
    }
    if (ctx.method === 'POST' && action === '/login') {
      const form = await readForm(ctx.req);
      if (!USERS[form.login] || form.password !== PASSWORD) {
        ctx.status = 401;
        ctx.type = 'html';
        ctx.body = loginPage(uid, 'Invalid login or password');
        return undefined;
      }
      const result = { login: { accountId: form.login, amr: amrFor(form.login), acr: USERS[form.login].mfa ? 'mfa' : 'pwd' } };
      return oidc.interactionFinished(ctx.req, ctx.res, result, { mergeWithLastSubmission: false });
    }
    if (action === '/abort') {
      const result = { error: 'access_denied', error_description: 'End-User aborted interaction' };
      return oidc.interactionFinished(ctx.req, ctx.res, result, { mergeWithLastSubmission: false });
    }
    ctx.status = 405;
    return undefined;
  } catch (err) {
    ctx.status = 400;
    ctx.type = 'text';
    ctx.body = `interaction failed: ${err.message}`;
    return undefined;
  }
});

oidc.listen(PORT, '127.0.0.1', () => console.log(`oidc-provider listening on ${ISSUER}`));

// An independent APNs client (npm apns2, undici HTTP/2) against mock-apns on 127.0.0.1:443.
// Usage: NODE_EXTRA_CA_CERTS=ca.pem node apns_check.mjs KEY_ID TEAM_ID key.p8 TOPIC
import { readFileSync } from "node:fs";
import { ApnsClient, Notification } from "apns2";

const [keyId, team, keyFile, topic] = process.argv.slice(2);
const client = new ApnsClient({
  team, keyId, signingKey: readFileSync(keyFile, "utf8"), defaultTopic: topic, host: "127.0.0.1",
});
let failures = 0;
const check = (name, ok, detail) => {
  console.log(`${ok ? "ok  " : "FAIL"} apns2: ${name}${detail ? ` (${detail})` : ""}`);
  if (!ok) failures += 1;
};
const good = "a".repeat(64);
try {
  await client.send(new Notification(good, { alert: { title: "interop", body: "from apns2" } }));
  check("a valid notification is accepted", true);
} catch (e) {
  check("a valid notification is accepted", false, e?.reason ?? e?.message);
}
for (const [token, reason] of [["not-a-hex-token", "BadDeviceToken"], ["4100" + "b".repeat(60), "Unregistered"]]) {
  try {
    await client.send(new Notification(token, { alert: "x" }));
    check(`${reason} is reported`, false, "accepted");
  } catch (e) {
    check(`${reason} is reported`, e?.reason === reason, e?.reason ?? e?.message);
  }
}
await client.close();
process.exit(failures === 0 ? 0 : 1);

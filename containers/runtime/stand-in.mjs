// A stand-in model API on 127.0.0.1, for build time only (never copied into an image).
//
// The Google image's build runs `gemini -p` once against it so that the V8 compile cache is
// filled by the code path a task takes (the whole CLI up to its first model request and the
// rendering of the answer), not only by `--version`. It answers each API's model request with
// a short canned reply in the API's streaming format and everything else with 404.
//
// Usage: node stand-in.mjs PORT [LOG]   — LOG, if given, gets one line per request:
//   "<arrival ms since the epoch> <method> <path> upgrade=<Upgrade header or ->"
// Stops by itself after 120 s, so a failed build step never leaves it running.
import { createServer } from 'node:http';
import { appendFileSync } from 'node:fs';

const port = Number(process.argv[2]);
const log = process.argv[3];
if (!Number.isInteger(port) || port <= 0) {
  console.error('stand-in: usage: node stand-in.mjs PORT [LOG]');
  process.exit(2);
}

const reply = 'polydev-canned-reply-ok';
const sse = (events) => events.map((e) => `${e.event ? `event: ${e.event}\n` : ''}data: ${JSON.stringify(e.data)}\n\n`).join('');

const gemini = sse([
  { data: { candidates: [{ content: { parts: [{ text: reply }], role: 'model' }, index: 0 }], modelVersion: 'gemini-2.5-flash' } },
  { data: { candidates: [{ content: { parts: [{ text: '' }], role: 'model' }, finishReason: 'STOP', index: 0 }], usageMetadata: { promptTokenCount: 1, candidatesTokenCount: 1, totalTokenCount: 2 }, modelVersion: 'gemini-2.5-flash' } },
]);
const geminiRouter = JSON.stringify({ candidates: [{ content: { parts: [{ text: '{"reasoning": "stand-in", "model_choice": "flash"}' }], role: 'model' }, finishReason: 'STOP', index: 0 }] });
const message = { id: 'msg_1', type: 'message', role: 'assistant', model: 'claude-sonnet-4-5', content: [], stop_reason: null, stop_sequence: null, usage: { input_tokens: 1, output_tokens: 1 } };
const anthropic = sse([
  { event: 'message_start', data: { type: 'message_start', message } },
  { event: 'content_block_start', data: { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } } },
  { event: 'content_block_delta', data: { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: reply } } },
  { event: 'content_block_stop', data: { type: 'content_block_stop', index: 0 } },
  { event: 'message_delta', data: { type: 'message_delta', delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { output_tokens: 1 } } },
  { event: 'message_stop', data: { type: 'message_stop' } },
]);
const anthropicJson = JSON.stringify({ ...message, content: [{ type: 'text', text: reply }], stop_reason: 'end_turn' });
const response = (status, output) => ({ id: 'resp_1', object: 'response', created_at: 1700000000, status, model: 'gpt-5', output, usage: null });
const item = { id: 'msg_1', type: 'message', status: 'completed', role: 'assistant', content: [{ type: 'output_text', text: reply, annotations: [] }] };
const openai = sse([
  { event: 'response.created', data: { type: 'response.created', sequence_number: 0, response: response('in_progress', []) } },
  { event: 'response.output_item.done', data: { type: 'response.output_item.done', sequence_number: 1, output_index: 0, item } },
  { event: 'response.completed', data: { type: 'response.completed', sequence_number: 2, response: { ...response('completed', [item]), usage: { input_tokens: 1, input_tokens_details: { cached_tokens: 0 }, output_tokens: 1, output_tokens_details: { reasoning_tokens: 0 }, total_tokens: 2 } } } },
]);

const server = createServer((req, res) => {
  const arrival = Date.now();
  if (log) appendFileSync(log, `${arrival} ${req.method} ${req.url} upgrade=${req.headers.upgrade ?? '-'}\n`);
  let body = '';
  req.on('data', (chunk) => { body += chunk; });
  req.on('end', () => {
    const path = req.url ?? '';
    const send = (type, text) => { res.writeHead(200, { 'content-type': type }); res.end(text); };
    if (path.includes(':streamGenerateContent')) send('text/event-stream', gemini);
    else if (path.includes(':generateContent')) send('application/json', geminiRouter);
    else if (path.startsWith('/v1/messages')) {
      if (body.includes('"stream":true')) send('text/event-stream', anthropic);
      else send('application/json', anthropicJson);
    } else if (path.startsWith('/v1/responses')) send('text/event-stream', openai);
    else { res.writeHead(req.method === 'HEAD' ? 200 : 404, { 'content-type': 'application/json' }); res.end(req.method === 'HEAD' ? '' : '{"error":{"message":"not served by the stand-in"}}'); }
  });
});
server.listen(port, '127.0.0.1');
setTimeout(() => process.exit(0), 120_000).unref();

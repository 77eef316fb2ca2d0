"""The collectors' Lua scripts: record, count and complete, each in one atomic step."""

# Each collector is one script, so that recording a result, counting it and completing
# the job happen together or not at all: a worker killed at any point leaves either
# nothing or everything, and its redelivered message, finding the result recorded,
# still completes a job whose last result it carries.
#
# Shared tail: complete the job once every expected result is in (KEYS[1] is the
# job's meta hash; the other keys get the finished job's lifetime).
_COMPLETE = """
local done = tonumber(redis.call('HGET', KEYS[1], 'done') or '-1')
local expected = tonumber(redis.call('HGET', KEYS[1], 'expected') or '-1')
if done >= 0 and done >= expected and redis.call('HGET', KEYS[1], 'status') ~= 'complete'
   and redis.call('HEXISTS', KEYS[1], 'ingesting') == 0 then
  redis.call('HSET', KEYS[1], 'status', 'complete', 'finished', ARGV[1])
  for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ARGV[2]) end
end
"""
# Evaluation: KEYS meta, cells, agg, ...; ARGV finished, keep_s, then per cell: cell, "correct,total",
# "attack|configuration", correct, total. Returns how many cells were new.
_COLLECT = """
local new = 0
for i = 3, #ARGV, 5 do
  if redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('HINCRBY', KEYS[3], ARGV[i + 2] .. '|correct', ARGV[i + 3])
    redis.call('HINCRBY', KEYS[3], ARGV[i + 2] .. '|total', ARGV[i + 4])
    redis.call('HINCRBY', KEYS[1], 'done', 1)
    new = new + 1
  end
end
""" + _COMPLETE + "return new"
# Screening: KEYS the job's keys (keys.SCREEN_JOB_PARTS: meta, records, plan, ids, errors, traffic, collected,
# done bitmaps) then the batch's waiting records; ARGV finished, keep_s, batch, records JSON, how many records.
# The ``collected`` bit says a batch was counted, so a redelivery counts nothing even after its records left
# Redis; the batch's ids and waiting records are deleted, and a job that is gone (no meta) is not recreated.
# The deletes come first: a full Redis refuses only a script's first write and never a delete, so a batch is
# counted however full Redis is (its records only move from one key to another).
_SCREEN_COLLECT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[4], ARGV[3])
redis.call('DEL', KEYS[#KEYS])
local new = 1 - redis.call('SETBIT', KEYS[7], ARGV[3], 1)
if new == 1 then
  redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
  redis.call('HINCRBY', KEYS[1], 'done', 1)
  redis.call('HINCRBY', KEYS[1], 'screened', ARGV[5])
end
""" + _COMPLETE + "return new"
# Sealing an open screening job (every chunk added): KEYS and the first two ARGV as collecting.
# Returns 1 if that completed it.
_SCREEN_SEAL = """
redis.call('HDEL', KEYS[1], 'ingesting')
""" + _COMPLETE + "return redis.call('HGET', KEYS[1], 'status') == 'complete' and 1 or 0"
# Corpus: KEYS meta, cells, corpus shard set; ARGV cell. Completing a corpus writes its
# manifest first, so the script only says whether that is due: {new, due}.
_CORPUS_COLLECT = """
local new = redis.call('HSETNX', KEYS[2], ARGV[1], 1)
if new == 1 then
  redis.call('SADD', KEYS[3], ARGV[1])
  redis.call('HINCRBY', KEYS[1], 'done', 1)
end
local done = tonumber(redis.call('HGET', KEYS[1], 'done') or '-1')
local expected = tonumber(redis.call('HGET', KEYS[1], 'expected') or '-1')
local due = done >= 0 and done >= expected and redis.call('HGET', KEYS[1], 'status') ~= 'complete'
return {new, due and 1 or 0}
"""
# Completing a corpus whose manifest is written: KEYS meta and the job's other keys, ARGV finished, keep_s.
_CORPUS_COMPLETE = _COMPLETE + "return 1"
# A producer stored batch ARGV[1] - 1: KEYS[1] meta's 'fed' becomes at least ARGV[1] (batches of
# a corpus may be skipped, so it only grows).
_NOTE_FED = """
local fed = tonumber(redis.call('HGET', KEYS[1], 'fed') or '0')
if tonumber(ARGV[1]) > fed then redis.call('HSET', KEYS[1], 'fed', ARGV[1]) end
return 1
"""

-- In the past week, how many times did the temperature in a room stay outside 18-26 °C for
-- more than ten minutes? One row per room that it happened in, with the number of times.
--
-- A room's readings (of every device in it) in time order; consecutive readings outside the
-- range form one episode, which lasts from its first reading to the first reading back in range
-- (or to its last reading, if it has not ended).
WITH ordered AS (
  SELECT tenant, building, floor, room, event_time,
         temperature < 18 OR temperature > 26 AS outside,
         lead(event_time) OVER (PARTITION BY tenant, building, floor, room
                                ORDER BY event_time) AS next_time
    FROM telemetry
   WHERE temperature IS NOT NULL AND room IS NOT NULL
     AND event_time >= now() - INTERVAL '7 days'
),
numbered AS (
  -- Readings in range so far: the same number for every reading of one episode.
  SELECT *, sum(CASE WHEN outside THEN 0 ELSE 1 END)
              OVER (PARTITION BY tenant, building, floor, room ORDER BY event_time
                    ROWS UNBOUNDED PRECEDING) AS episode
    FROM ordered
),
episodes AS (
  SELECT tenant, building, floor, room, episode,
         max(coalesce(next_time, event_time)) - min(event_time) AS lasted
    FROM numbered
   WHERE outside
   GROUP BY tenant, building, floor, room, episode
)
SELECT tenant, building, floor, room, count(*) AS times
  FROM episodes
 WHERE lasted > INTERVAL '10 minutes'
 GROUP BY tenant, building, floor, room
 ORDER BY times DESC, tenant, building, floor, room;

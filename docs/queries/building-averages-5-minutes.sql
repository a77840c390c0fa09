-- The average temperature of every building over the last five minutes.
SELECT tenant, building, round(avg(temperature), 2) AS temperature, count(*) AS readings
  FROM telemetry
 WHERE event_time >= now() - INTERVAL '5 minutes'
   AND event_date >= current_date() - INTERVAL '1 day'
 GROUP BY tenant, building
 ORDER BY tenant, building;

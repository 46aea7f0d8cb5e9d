select * from user_profiles where user_id = %(user_id)s
